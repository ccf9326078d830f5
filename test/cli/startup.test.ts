/**
 * `ghostgate start` either runs whole or exits: a listener that cannot bind (data, TLS, admin,
 * bundled model server) ends the process with exit 1 and one line naming the port and the config
 * key / env var that set it, with whatever had started closed.
 */
import { writeFileSync, mkdtempSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { Gateway } from '../../core/gateway.ts';
import { GatewayError } from '../../core/errors.ts';
import { spawnModelServer } from '../model-server/fixtures/spawn.ts';
import { makeCert } from '../helpers/tls.ts';
import { freePort, portIsFree, startCli, takePort } from './run.ts';

/** Start with the real default config and these ports; expect a refusal naming `key` and `env`. */
async function refused(t: Test, ports: Record<string, number>, taken: number, key: string, env: string, args: string[] = ['start']): Promise<void> {
  const p = startCli(t, args, Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])));
  const code = await p.exited;
  t.equal(code, 1, 'exit code 1');
  const lines = p.stderr().trim().split('\n');
  t.equal(lines.length, 1, `one line on stderr: ${p.stderr()}`);
  t.match(lines[0], `GW_ERR_SERVER_LISTEN Cannot listen on 127.0.0.1:${taken}`, 'names the address');
  t.match(lines[0], 'the port is already in use');
  t.match(lines[0], `set by ${key}`, `names the config key ${key}`);
  t.match(lines[0], `env ${env}`, `names the env var ${env}`);
  t.notMatch(p.stdout(), /ghostgate is running/, 'no banner');
  for (const [name, port] of Object.entries(ports)) {
    if (port !== taken) t.ok(await portIsFree(port), `${name} ${port} was closed (or never opened)`);
  }
}

type Ports = { GHOSTGATE_PORT: number; GHOSTGATE_ADMIN_PORT: number; GHOSTGATE_MODEL_PORT: number };
async function ports(): Promise<Ports> {
  return { GHOSTGATE_PORT: await freePort(), GHOSTGATE_ADMIN_PORT: await freePort(), GHOSTGATE_MODEL_PORT: await freePort() };
}

t.test('data plane port taken', async (t) => {
  const taken = await takePort(t);
  await refused(t, { ...(await ports()), GHOSTGATE_PORT: taken }, taken, 'listen.port', 'GHOSTGATE_PORT');
});

t.test('admin port taken: the data plane and the bundled model server it started are closed', async (t) => {
  const taken = await takePort(t);
  await refused(t, { ...(await ports()), GHOSTGATE_ADMIN_PORT: taken }, taken, 'admin.port', 'GHOSTGATE_ADMIN_PORT');
});

t.test('--workers 2: data plane or admin port taken, the same one line and exit 1', async (t) => {
  for (const [env, key] of [['GHOSTGATE_PORT', 'listen.port'], ['GHOSTGATE_ADMIN_PORT', 'admin.port']] as const) {
    const taken = await takePort(t);
    const p = { ...(await ports()), [env]: taken };
    await t.test(key, (t) => refused(t, p, taken, key, env, ['start', '--workers', '2']));
  }
});

t.test('bundled model server port taken', async (t) => {
  const taken = await takePort(t);
  await refused(t, { ...(await ports()), GHOSTGATE_MODEL_PORT: taken }, taken, 'modelServer.port', 'GHOSTGATE_MODEL_PORT');
});

t.test('TLS port taken (a config of our own; the port from an env var)', async (t) => {
  const model = await spawnModelServer();
  t.teardown(() => model.stop());
  const cert = makeCert();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-startup-'));
  mkdirSync(path.join(dir, 'policies'));
  writeFileSync(path.join(dir, 'key.pem'), cert.key);
  writeFileSync(path.join(dir, 'cert.pem'), cert.cert);
  const file = path.join(dir, 'gateway.config.yaml');
  writeFileSync(file, [
    'listen:',
    '  port: ${GHOSTGATE_PORT}',
    '  tls:',
    '    port: ${MY_TLS_PORT:-8443}',
    '    cert: { file: cert.pem }',
    '    key: { file: key.pem }',
    'admin: { port: 0 }',
    `upstreams: { local: { url: "${model.url}" } }`,
    'models: { ghost-small: { upstream: local } }',
  ].join('\n'));
  const taken = await takePort(t);
  const data = await freePort();
  const p = startCli(t, ['start', '--config', file], { GHOSTGATE_PORT: String(data), MY_TLS_PORT: String(taken) });
  t.equal(await p.exited, 1);
  const lines = p.stderr().trim().split('\n');
  t.equal(lines.length, 1, p.stderr());
  t.match(lines[0], `Cannot listen on 127.0.0.1:${taken} (TLS data plane)`);
  t.match(lines[0], 'set by listen.tls.port (env MY_TLS_PORT)');
  t.ok(await portIsFree(data), 'the cleartext listener that did start was closed');
});

t.test('in process: Gateway.start throws GW_ERR_SERVER_LISTEN and leaves nothing open (warm pools too)', async (t) => {
  const model = await spawnModelServer();
  t.teardown(() => model.stop());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-startup-'));
  const data = await freePort();
  const taken = await takePort(t);
  const file = path.join(dir, 'gateway.config.yaml');
  writeFileSync(file, [
    `listen: { port: ${data} }`,
    `admin: { port: ${taken} }`,
    `upstreams: { local: { url: "${model.url}", pool: { size: 2 } } }`,
    'models: { ghost-small: { upstream: local } }',
    'policies: []',
  ].join('\n'));
  const err = await Gateway.start({ configFile: file, watch: false, logger: { level: 'silent' } }).then(() => undefined, (e: unknown) => e);
  t.type(err, GatewayError);
  t.equal((err as GatewayError).code, 'GW_ERR_SERVER_LISTEN');
  t.match((err as GatewayError).message, `127.0.0.1:${taken} (admin plane)`);
  t.match((err as GatewayError).message, 'set by admin.port in');
  t.ok(await portIsFree(data), 'data plane closed');
  // The two warm upstream sessions were opened, then closed with the runtime.
  const deadline = Date.now() + 30_000;
  let s: { sessions: { opened: number; active: number } };
  do {
    s = await (await fetch(`${model.url}/_stats`)).json() as typeof s;
    if (s.sessions.active === 0) break;
    await new Promise((r) => setTimeout(r, 50));
  } while (Date.now() < deadline);
  t.ok(s.sessions.opened >= 1, 'pools had warmed');
  t.equal(s.sessions.active, 0, 'and were closed');
});

t.test('policies/examples/gateway.yaml takes the GHOSTGATE_* port overrides (runs beside npm start)', async (t) => {
  const model = await spawnModelServer();
  t.teardown(() => model.stop());
  const port = await freePort();
  const adminPort = await freePort();
  const gw = await Gateway.start({
    configFile: path.resolve(import.meta.dirname, '../../policies/examples/gateway.yaml'),
    env: { ...process.env, GHOSTGATE_PORT: String(port), GHOSTGATE_ADMIN_PORT: String(adminPort), GHOSTGATE_MODEL_PORT: String(model.port) },
    watch: false, logger: { level: 'silent' },
  });
  t.teardown(() => gw.close(2000));
  t.equal(gw.addresses!.port, port, 'data plane on GHOSTGATE_PORT');
  t.equal(gw.addresses!.adminPort, adminPort, 'admin plane on GHOSTGATE_ADMIN_PORT');
  for (const [name, u] of gw.runtime.upstreams) t.equal(u.config.url, `http://127.0.0.1:${model.port}`, `${name} on GHOSTGATE_MODEL_PORT`);
  t.equal((await fetch(`http://127.0.0.1:${adminPort}/_ping`)).status, 200);
});

t.test('an address that is not this machine\'s: the message names the host key', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-startup-'));
  const file = path.join(dir, 'gateway.config.yaml');
  const data = await freePort();
  // 192.0.2.0/24 is TEST-NET-1: never assigned to a local interface.
  writeFileSync(file, `listen: { port: ${data} }\nadmin: { host: 192.0.2.7, port: 0, insecureAllowNoCredential: true }\nupstreams: { local: { url: "http://127.0.0.1:9", pool: { warm: false } } }\nmodels: { m: { upstream: local } }\npolicies: []\n`);
  const err = await Gateway.start({ configFile: file, watch: false, logger: { level: 'silent' } }).then(() => undefined, (e: unknown) => e);
  t.equal((err as GatewayError).code, 'GW_ERR_SERVER_LISTEN');
  t.match((err as GatewayError).message, /Cannot listen on 192\.0\.2\.7:0 \(admin plane\): the address is not one of this machine's; it is set by admin\.host in /);
  t.ok(await portIsFree(data), 'the data plane that had started is closed');
});
