/**
 * An upstream stream the gateway stopped reading (its client takes no bytes) is released when the
 * request ends, also when the upstream had already sent the whole response: Node keeps such a
 * stream (and every byte buffered in it) open until its readable side is consumed, so
 * RST_STREAM alone never closed it; it held its session's stream count (a session retired by
 * GOAWAY then stayed "draining" forever) and its buffered response in memory.
 */
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { waitFor } from '../helpers/h2.ts';
import { rawConnect, request, settings } from '../helpers/raw-h2.ts';

const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;

t.test('a never-reading client goes away after the upstream finished: its upstream streams close', async (t) => {
  const g = await startGateway(t, {
    extraConfig: 'limits: { clientStallMs: 0 }',
    // ~100 KB per response: more than the client stream's buffer (so the gateway pauses the
    // upstream body), less than the upstream stream window (so the upstream finishes it).
    modelArgs: ['--ttft-ms', '0', '--token-ms', '0', '--tokens', '8'],
  });
  const up = g.gw.runtime.upstreams.get('local')!;
  const N = 10;
  const c = await rawConnect(g.url, settings({ [SETTINGS_INITIAL_WINDOW_SIZE]: 0 }));
  t.teardown(() => c.socket.destroy());
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'never read', stream: true });
  const frames: Buffer[] = [];
  for (let i = 0, id = 1; i < N; i++, id += 2) frames.push(request(id, '/v1/completions', body, [['x-request-id', `rel-${id}`], ['x-tokens', '1500'], ['x-token-ms', '0']]));
  c.socket.write(Buffer.concat(frames));
  // The upstream sent every response in full (END_STREAM) while the client read none of it.
  await waitFor('the model to complete every stream', async () => (await g.modelStats()).completed >= N, 30_000);
  t.equal(up.stats().streams, N, 'the upstream streams are held while their client has not read them');
  c.socket.destroy();
  await waitFor('the requests to end', () => g.gw.runtime.inflight === 0, 15_000);
  await waitFor('every upstream stream to close', () => up.stats().streams === 0, 15_000).catch(() => { /* asserted below */ });
  t.equal(up.stats().streams, 0, 'no upstream stream is left open once the requests ended');
});

t.test('a never-reading client stalls after the upstream finished: its upstream streams close', async (t) => {
  const g = await startGateway(t, {
    extraConfig: 'limits: { clientStallMs: 1000 }',
    modelArgs: ['--ttft-ms', '0', '--token-ms', '0', '--tokens', '8'],
  });
  const up = g.gw.runtime.upstreams.get('local')!;
  const N = 10;
  const c = await rawConnect(g.url, settings({ [SETTINGS_INITIAL_WINDOW_SIZE]: 0 }));
  t.teardown(() => c.socket.destroy());
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'never read', stream: true });
  const frames: Buffer[] = [];
  for (let i = 0, id = 1; i < N; i++, id += 2) frames.push(request(id, '/v1/completions', body, [['x-request-id', `stall-rel-${id}`], ['x-tokens', '1500'], ['x-token-ms', '0']]));
  c.socket.write(Buffer.concat(frames));
  await waitFor('the model to complete every stream', async () => (await g.modelStats()).completed >= N, 30_000);
  // The stall timer (1 s) cancels each request; the client is still connected.
  await waitFor('the requests to end', () => g.gw.runtime.inflight === 0, 15_000);
  await waitFor('every upstream stream to close', () => up.stats().streams === 0, 15_000).catch(() => { /* asserted below */ });
  t.equal(up.stats().streams, 0, 'no upstream stream is left open once the stalled requests ended');
});
