/**
 * A client that never reads fills the upstream's session memory; when it leaves, everyone else
 * must still be served. While a client does not read, the gateway stops reading the upstream,
 * so the upstream queues the rest of each response in its own session. A Node upstream (like the
 * bundled model server, `maxSessionMemory` 64 MB) then refuses every new stream on that session
 * with RST_STREAM(ENHANCE_YOUR_CALM), and it kept refusing after the client had gone and its
 * streams were cancelled: a fresh connection to the same upstream is served, the old sessions
 * are not. Before the fix the pool kept both sessions, every retry landed on one of them, and
 * every later request from every client got `503 GW_ERR_UPSTREAM_UNAVAILABLE`.
 */
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post, waitFor, within } from '../helpers/h2.ts';
import { FRAME, rawConnect, request, settings } from '../helpers/raw-h2.ts';

const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const ATTACKER = '127.0.0.3';

t.test('a client that never reads fills the upstream sessions; after it leaves, other clients are served', async (t) => {
  // clientStallMs 0: the attacker's streams stay open until it leaves, so the upstream has written
  // (queued) every response by then, whatever the machine's speed.
  const g = await startGateway(t, { extraConfig: 'limits: { clientStallMs: 0 }', modelArgs: ['--ttft-ms', '1', '--token-ms', '0', '--tokens', '8'] });
  const c = await rawConnect(g.url, settings({ [SETTINGS_INITIAL_WINDOW_SIZE]: 0 }), ATTACKER);
  t.teardown(() => c.socket.destroy());
  // 128 streams (the per-address cap), 20,000 tokens each: about 2 MB per response, of which the
  // gateway takes 1 MiB (its stream window) and the upstream queues the rest: over 64 MB.
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'never read', stream: true });
  const frames: Buffer[] = [];
  for (let i = 0, id = 1; i < 128; i++, id += 2) frames.push(request(id, '/v1/completions', body, [['x-tokens', '20000'], ['x-token-ms', '0']]));
  c.socket.write(Buffer.concat(frames));
  await waitFor('the upstream to have written every response', async () => (await g.modelStats()).completed >= 128, 60_000);
  t.notOk(c.frames.some((f) => f.type === FRAME.DATA), 'the attacker took no byte');
  c.socket.destroy();
  await waitFor('the attacker\'s streams to be cancelled upstream', () => g.gw.runtime.inflight === 0, 30_000);

  const s = await connect(g.url);
  t.teardown(() => s.close());
  for (let i = 0; i < 4; i++) {
    const r = await within('a bystander request', post(s, '/v1/completions', { model: 'ghost-small', prompt: 'by', stream: true }), 30_000);
    t.equal(r.status, 200, r.status === 200 ? 'served' : r.text);
    t.ok(r.complete && r.events.at(-1) === '[DONE]', 'complete');
  }
  const retried = (await g.gw.metrics.upstreamRetries.get()).values.find((v) => v.labels.reason === 'enhance_your_calm')?.value ?? 0;
  t.ok(retried >= 1, `the upstream refused streams on the full sessions (${retried} retried)`);
});
