/**
 * core/runtime-patches.ts: `AsyncResource.prototype.bind` without the deprecated `asyncResource`
 * property, in the gateway's own processes only.
 * - Importing and starting the core as a library (Gateway.start in this process) patches nothing;
 *   changing the key needs a restart (a reload reports it).
 * - Patched, `bind` behaves as Node's (validation error, `length`, `this`, async scope) and
 *   AsyncLocalStorage still follows a request through Node's HTTP/2 client, also when
 *   `request()` is called before the session connected (its start then runs from the session's
 *   'connect', through the bound function): what APM and OpenTelemetry rely on.
 * - `ghostgate start` (one process, or its cluster's primary and workers) runs patched;
 *   `server.keepAsyncResourceProperty: true` keeps Node's `bind`. Seen from inside the process by
 *   test/core/fixtures/bind-probe.ts at its first upstream request.
 */
import { AsyncLocalStorage, AsyncResource, executionAsyncId } from 'node:async_hooks';
import diagnostics from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import type { Test } from 'tap';
import { applyRuntimePatches } from '../../core/runtime-patches.ts';
import * as embedding from '../../core/fastify.ts';
import { clusterClient } from '../helpers/cluster.ts';
import { startGateway } from '../helpers/gateway.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import type { GatewayProcess, GatewayProcessOptions } from '../helpers/gateway-process.ts';
import { connect, post, until } from '../helpers/h2.ts';

const nodeBind = AsyncResource.prototype.bind;
const hasProperty = (): boolean => Object.hasOwn(new AsyncResource('probe').bind(() => {}), 'asyncResource');

t.test('the core imported and started as a library leaves Node as it is', async (t) => {
  const g = await startGateway(t);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  t.equal((await post(s, '/v1/completions', { prompt: 'x' })).status, 200);
  t.equal(AsyncResource.prototype.bind, nodeBind, 'bind is Node\'s');
  t.ok(hasProperty(), 'bound functions have the asyncResource property');
  t.type(embedding.applyRuntimePatches, 'function', 'ghostgate/fastify exports applyRuntimePatches for embedders');
});

t.test('changing server.keepAsyncResourceProperty needs a restart', async (t) => {
  const g = await startGateway(t);
  g.write('gateway.config.yaml', `${readFileSync(g.configFile, 'utf8')}server: { keepAsyncResourceProperty: true }\n`);
  const r = await g.gw.reload('test');
  t.ok(r.ok);
  t.strictSame(r.restartRequired, ['server.keepAsyncResourceProperty']);
  t.equal(AsyncResource.prototype.bind, nodeBind, 'a reload patches nothing either');
});

t.test('patched, bind behaves as Node\'s without the property', async (t) => {
  applyRuntimePatches();
  t.not(AsyncResource.prototype.bind, nodeBind);
  t.notOk(hasProperty(), 'no asyncResource property');
  t.notOk(Object.hasOwn(AsyncResource.bind(() => {}), 'asyncResource'), 'nor with the static AsyncResource.bind');
  const r = new AsyncResource('test');
  const seen: Array<{ self: unknown; id: number; args: unknown[] }> = [];
  function fn(this: unknown, a: unknown, b: unknown, c: unknown): string { seen.push({ self: this, id: executionAsyncId(), args: [a, b, c] }); return 'ret'; }
  const bound = r.bind(fn);
  t.equal(bound.length, 3, 'length is fn\'s');
  const holder = { m: bound };
  t.equal(holder.m(1, 2, 3), 'ret');
  const self = { me: true };
  // bind(fn, thisArg): Node's second argument (@types/node leaves it out).
  const bindWith = r.bind as unknown as (f: typeof fn, thisArg: object) => typeof fn;
  t.equal(bindWith.call(r, fn, self)(4, 5, 6), 'ret');
  t.strictSame(seen, [
    { self: holder, id: r.asyncId(), args: [1, 2, 3] },
    { self, id: r.asyncId(), args: [4, 5, 6] },
  ], 'runs in the resource\'s scope, with the caller\'s this or thisArg');
  const nodeError = ((): unknown => { try { nodeBind.call(r, 42 as never); } catch (e) { return e; } })() as Error;
  t.throws(() => r.bind(42 as never), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: nodeError.message }, 'Node\'s own validation error');
  applyRuntimePatches({ keepAsyncResourceProperty: true });
  t.notOk(hasProperty(), 'nothing is undone');
});

t.test('patched, AsyncLocalStorage follows requests through Node\'s HTTP/2 client', async (t) => {
  applyRuntimePatches();
  const server = http2.createServer();
  server.on('stream', (st) => { st.resume(); st.on('end', () => { st.respond({ ':status': 200 }); st.write('a'); st.end('b'); }); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise((r) => server.close(r)));
  const als = new AsyncLocalStorage<string>();
  // Where each request's callbacks ran, by request: [event, store] in order.
  const events = new Map<string, Array<[string, string | undefined]>>();
  const started = diagnostics.channel('http2.client.stream.start');
  const onStart = (m: unknown): void => { events.get(String((m as { stream: { sentHeaders: Record<string, string> } }).stream.sentHeaders[':path']).slice(1))?.push(['stream.start', als.getStore()]); };
  started.subscribe(onStart);
  t.teardown(() => started.unsubscribe(onStart));
  const session = als.run('the session', () => http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  t.teardown(() => session.destroy());
  const request = (id: string): Promise<void> => als.run(id, () => new Promise<void>((resolve, reject) => {
    const log: Array<[string, string | undefined]> = [];
    events.set(id, log);
    const st = session.request({ ':method': 'POST', ':path': `/${id}` });
    for (const ev of ['ready', 'response', 'data', 'end', 'close']) st.on(ev, () => { log.push([ev, als.getStore()]); });
    st.on('close', () => resolve());
    st.on('error', reject);
    st.end('body');
  }));
  t.ok(session.connecting, 'the first requests are made before the session connected');
  const early = ['early-1', 'early-2', 'early-3'].map(request);
  await Promise.all(early);
  t.notOk(session.connecting);
  await Promise.all(['late-1', 'late-2'].map(request));
  for (const [id, log] of events) {
    // On a connected session, request() starts the stream at once: 'ready' comes before it returns.
    const want = ['stream.start', ...(id.startsWith('early') ? ['ready'] : []), 'response', 'data', 'end', 'close'];
    t.strictSame(new Set(log.map(([ev]) => ev)), new Set(want), `${id}: every event came`);
    t.strictSame(log.filter(([, store]) => store !== id), [], `${id}: every callback saw the request's store`);
  }
});

const PROBE = pathToFileURL(path.join(import.meta.dirname, 'fixtures/bind-probe.ts')).href;

/** Each process's bindProbe line: pid → whether bound functions had the property. */
function probes(stderr: string): Map<number, boolean> {
  const out = new Map<number, boolean>();
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{"bindProbe"')) continue;
    const { bindProbe: p } = JSON.parse(line) as { bindProbe: { pid: number; asyncResourceProperty: boolean } };
    out.set(p.pid, p.asyncResourceProperty);
  }
  return out;
}

async function startProbed(t: Test, o: GatewayProcessOptions = {}): ReturnType<typeof startGatewayProcess> {
  return startGatewayProcess(t, { ...o, modelArgs: ['--ttft-ms', '0', '--token-ms', '0', '--tokens', '2'], env: { NODE_OPTIONS: `--import ${PROBE}` } });
}

/** What the probe in `g`'s own process (a single gateway, or the primary) reported, once it has. */
async function probed(g: GatewayProcess): Promise<boolean> {
  const pid = g.child.pid!;
  return (await until(() => { const p = probes(g.stderr()); return p.has(pid) ? p : undefined; })).get(pid)!;
}

t.test('ghostgate start runs patched', async (t) => {
  const g = await startProbed(t);
  t.equal((await clusterClient(g).oneShot()).status, 200);
  t.equal(await probed(g), false, 'no asyncResource property in the gateway process');
});

t.test('server.keepAsyncResourceProperty: true keeps Node\'s bind', async (t) => {
  const g = await startProbed(t, { extraConfig: 'server: { keepAsyncResourceProperty: true }' });
  t.equal((await clusterClient(g).oneShot()).status, 200);
  t.equal(await probed(g), true, 'the property is there');
});

t.test('a cluster\'s primary and workers run patched', async (t) => {
  const g = await startProbed(t, { args: ['--workers', '2'] });
  const c = clusterClient(g);
  const workers = new Set((await c.ping()).workers.map((w) => w.pid));
  // Connections spread over the workers by a hash of their addresses: one each until both spoke.
  const seen = await until(async () => {
    t.equal((await c.oneShot()).status, 200);
    const p = probes(g.stderr());
    return [...workers].every((pid) => p.has(pid)) ? p : undefined;
  }, 60_000, 0);
  t.strictSame([...workers].map((pid) => seen.get(pid)), [false, false], 'no asyncResource property in either worker');
  g.child.kill('SIGUSR2');
  t.equal(await probed(g), false, 'nor in the primary');
});
