/**
 * Rapid reset with the reset delayed: an attacker that sends each batch of requests and resets
 * them a few milliseconds later (past any "reset within N ms of opening" rule, before any
 * response) is cut off like one that resets in the same write, and a bystander sees no failure.
 */
import http2 from 'node:http2';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post, waitFor, within } from '../helpers/h2.ts';
import { rawConnect, request, rst } from '../helpers/raw-h2.ts';

const { NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

t.test('requests reset 4 ms after they were sent, 48 every 10 ms: the session is cut; a bystander sees no failure', async (t) => {
  // Response headers only after a 50 ms time to first token: every reset comes before any response.
  // rapidResetLimit 200 (default 1000): a cut needs 100-200 resets/s, and a loaded machine slows
  // the attacker's timers to a fraction of its nominal 4,800 streams/s.
  const g = await startGateway(t, { extraConfig: 'http2: { rapidResetLimit: 200 }', modelArgs: ['--ttft-ms', '50', '--token-ms', '1', '--tokens', '8'] });
  const b = await connect(g.url);
  t.teardown(() => b.close());
  let attackOver = false;
  const bystander = (async () => {
    const results: Array<{ status: number; done: boolean; error?: string }> = [];
    let after = 0;
    while (after < 10) {
      const r = await post(b, '/v1/completions', { model: 'ghost-small', prompt: 'by', stream: true });
      results.push({ status: r.status, done: r.events.at(-1) === '[DONE]' && r.complete, error: r.error });
      if (attackOver) after++;
    }
    return results;
  })();

  const c = await rawConnect(g.url);
  t.teardown(() => c.socket.destroy());
  let cut = false;
  void c.goaway.then(() => { cut = true; });
  void c.closed.then(() => { cut = true; });
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'attack', stream: true });
  const headers: Array<[string, string]> = [['x-headers-after-ttft', '1']];
  const started = performance.now();
  let sent = 0;
  let id = 1;
  // The attacker's loop (until cut, or 10 s): one write of 48 requests, their resets 4 ms later.
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      if (cut || c.socket.destroyed || performance.now() - started > 10_000) return resolve();
      const ids: number[] = [];
      const batch: Buffer[] = [];
      for (let i = 0; i < 48; i++, id += 2) { ids.push(id); batch.push(request(id, '/v1/completions', body, [...headers, ['x-request-id', `atk-${id}`]])); }
      c.socket.write(Buffer.concat(batch));
      sent += 48;
      setTimeout(() => { if (!c.socket.destroyed) c.socket.write(Buffer.concat(ids.map((i) => rst(i)))); }, 4);
      setTimeout(tick, 10);
    };
    tick();
  });
  const cutAfterMs = performance.now() - started;
  const wasCut = cut;
  t.ok(wasCut, `the session was cut (${sent} streams written in ${cutAfterMs.toFixed(0)} ms)`);
  if (!wasCut) c.socket.destroy();
  await within('the attacker\'s connection to close', c.closed, 10_000);
  attackOver = true;
  t.equal(wasCut ? await within('GOAWAY', c.goaway, 1000) : 'never cut', NGHTTP2_ENHANCE_YOUR_CALM, 'GOAWAY(ENHANCE_YOUR_CALM)');
  const cuts = (await g.gw.metrics.clientSessionsCut.get()).values.find((v) => v.labels.reason === 'rapid_reset');
  t.equal(cuts?.value, 1, 'counted in ghostgate_client_sessions_cut_total{reason="rapid_reset"}');
  t.ok(cutAfterMs < 6000, `cut off within seconds (${cutAfterMs.toFixed(0)} ms, ${sent} streams written)`);
  await waitFor('nothing in flight', () => g.gw.runtime.inflight === 0, 20_000);
  const results = await within('the bystander', bystander, 60_000);
  const reached = (await g.modelStats()).requests - results.length;
  t.comment(`cut after ${cutAfterMs.toFixed(0)} ms and ${sent} streams; ${reached} of them reached the model`);
  t.ok(results.length >= 10, `bystander made ${results.length} requests`);
  t.same(results.filter((r) => r.status !== 200 || !r.done), [], 'every bystander request completed');
});
