/**
 * Every attack of the soak's hostile client (bench/hostile.ts), one after the other for a moment
 * each, against a real gateway process: none may take the gateway down, and afterwards it still
 * answers a well-formed completion over HTTP/2 and HTTP/1.1. (The HEADERS + DATA + RST_STREAM in
 * one write attack once crashed it: an error reply to a stream already reset.)
 */
import t from 'tap';
import { ATTACKS, Bag } from '../../bench/hostile.ts';
import type { Start } from '../../bench/hostile.ts';
import { GatewayProc, freePort, gatewayDir, h1Bytes, h1Raw, h2Connect, h2Request, removeDir, startModel } from '../../bench/harness.ts';

t.test('no attack of the hostile client takes the gateway down', async (t) => {
  const model = await startModel(['--ttft-ms', '5', '--token-ms', '1', '--tokens', '4']);
  t.teardown(() => model.proc.stop());
  const port = await freePort();
  const admin = await freePort();
  const files = gatewayDir(`listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${admin} }
upstreams:
  local: { url: ${model.url}, protocol: h2c, pool: { size: 2 }, forwardHeaders: [user-agent, x-tokens, x-token-ms] }
models:
  ghost-small: { upstream: local }
defaultModel: ghost-small
policies: [policies/*.yaml]
modelServer: { enabled: false }
auth: { dev: true }
reload: { watch: false }
logging: { level: error }
`, { 'p.yaml': 'name: p\nsteps: [{ use: auth }]\n' });
  t.teardown(() => removeDir(files.dir));
  const gw = await GatewayProc.start(files.configFile, port, admin);
  t.teardown(() => gw.proc.stop());
  const token = await gw.token('hostile-test');
  const a: Start = { cmd: 'start', url: gw.url, port, token, seconds: 0, slotSeconds: 0 };
  for (const [name, attack] of ATTACKS) {
    const bag = new Bag();
    await attack(a, Date.now() + (name === 'one-write' ? 2500 : 800), bag);
    bag.close();
    t.ok(gw.proc.alive, `the gateway is up after ${name}${gw.proc.alive ? '' : `: ${gw.proc.stderrTail.slice(-800)}`}`);
    if (!gw.proc.alive) return;
  }
  const body = Buffer.from(JSON.stringify({ model: 'ghost-small', prompt: 'def f(', stream: true, max_tokens: 2 }));
  const s = await h2Connect(gw.url);
  t.teardown(() => s.destroy());
  const r2 = await h2Request(s, { ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', authorization: `Bearer ${token}` }, body, 30_000);
  t.equal(r2.status, 200, 'then HTTP/2 gets a completion');
  t.ok(r2.body.toString().endsWith('data: [DONE]\n\n'), 'a complete one');
  const r1 = await h1Raw(port, h1Bytes('POST /v1/completions HTTP/1.1', ['host: 127.0.0.1', 'connection: close', 'content-type: application/json', `authorization: Bearer ${token}`, `content-length: ${body.length}`], body), 30_000);
  t.equal(r1.status, 200, 'and HTTP/1.1 too');
});
