/**
 * Rapid reset: a session that opens streams and resets them as fast as it can is sent
 * GOAWAY(ENHANCE_YOUR_CALM) and closed after at most ten times `http2.rapidResetLimit` streams
 * (200 here; test/core/rapid-reset-no-error.test.ts floods at the default), its requests do not
 * reach the model, and a bystander sees no failure. A load balancer multiplexing many editors that
 * cancel ~45% of their requests (some within milliseconds) on one connection, for thousands of
 * streams and more resets than nghttp2's default bucket of 1000, is never cut.
 */
import http2 from 'node:http2';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, open, post, waitFor, within } from '../helpers/h2.ts';
import { rawConnect, request, rst } from '../helpers/raw-h2.ts';

const { NGHTTP2_CANCEL, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

// The limit a flood must exceed in one to two seconds: 200 here (default 1000), because the
// attacker runs in this process and a loaded machine slows it below the default's 500-1000
// resets/s (2,500 streams took 5.4 s at load 13; it was not cut for 17 s at load 19). How soon it
// is cut is then counted in streams, which does not depend on the machine's speed.
const LIMIT = 200;

t.test('an open+reset flood is cut off fast; none of it reaches the model; a bystander sees no failure', async (t) => {
  const g = await startGateway(t, { extraConfig: `http2: { rapidResetLimit: ${LIMIT} }`, modelArgs: ['--ttft-ms', '5', '--token-ms', '1', '--tokens', '8'] });
  // The bystander: a well-behaved client on its own connection, requests back to back.
  const b = await connect(g.url);
  t.teardown(() => b.close());
  let attackOver = false;
  const bystander = (async () => {
    const results: Array<{ status: number; done: boolean }> = [];
    let after = 0;
    while (after < 20) {
      const r = await post(b, '/v1/completions', { model: 'ghost-small', prompt: 'by', stream: true });
      results.push({ status: r.status, done: r.events.at(-1) === '[DONE]' && r.complete });
      if (attackOver) after++;
    }
    return results;
  })();

  const c = await rawConnect(g.url);
  t.teardown(() => c.socket.destroy());
  let cutCode: number | undefined;
  void c.goaway.then((code) => { cutCode = code; });
  let closed = false;
  void c.closed.then(() => { closed = true; });
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'attack', stream: true });
  const started = performance.now();
  let sent = 0;
  let id = 1;
  // As fast as the socket takes it: batches of 100 open+reset pairs, one write each (the gateway
  // reads each batch before the next: one setImmediate, a poll phase between).
  while (cutCode === undefined && !closed && sent < 200_000) {
    const batch: Buffer[] = [];
    for (let i = 0; i < 100; i++, id += 2) batch.push(request(id, '/v1/completions', body, [['x-request-id', `atk-${id}`]]), rst(id));
    c.socket.write(Buffer.concat(batch));
    sent += 100;
    await new Promise((r) => setImmediate(r));
  }
  const cutAfterMs = performance.now() - started;
  await within('the attacker\'s connection to close', c.closed, 10_000);
  attackOver = true;
  t.equal(await c.goaway, NGHTTP2_ENHANCE_YOUR_CALM, 'GOAWAY(ENHANCE_YOUR_CALM)');
  t.comment(`cut after ${cutAfterMs.toFixed(0)} ms and ${sent} streams written`);
  t.ok(sent <= 10 * LIMIT, `cut off within ten times the limit of streams (${sent} written, limit ${LIMIT})`);
  const cut = (await g.gw.metrics.clientSessionsCut.get()).values.find((v) => v.labels.reason === 'rapid_reset');
  t.equal(cut?.value, 1, 'counted in ghostgate_client_sessions_cut_total{reason="rapid_reset"}');

  const results = await within('the bystander', bystander, 60_000);
  t.ok(results.length >= 20, `bystander made ${results.length} requests`);
  t.same(results.filter((r) => r.status !== 200 || !r.done), [], 'every bystander request completed');
  const atk = (await g.modelRequests()).filter((r) => r.id.startsWith('atk-'));
  t.ok(atk.length <= sent / 100, `the model saw ${atk.length} of the ${sent} attack streams (a reset in the request's write is never forwarded)`);
  await waitFor('nothing in flight', () => g.gw.runtime.inflight === 0, 10_000);
});

// The second run makes every cancel count: response headers only after an 80 ms prefill, so every
// cancel comes before any response. The share of resets (45%, under one half) keeps the session
// open; the third run sets a limit (100) its resets exceed, so only the share rule keeps it open.
const variants: Array<[string, string, Record<string, string>, string]> = [
  ['default settings', '', {}, '10'],
  ['every cancel before any response', '', { 'x-headers-after-ttft': '1' }, '80'],
  // With a limit its resets exceed, the share rule alone keeps it open.
  ['every cancel before any response, rapidResetLimit 100', 'http2: { rapidResetLimit: 100 }', { 'x-headers-after-ttft': '1' }, '80'],
];
for (const [name, extraConfig, headers, ttft] of variants) {
t.test(`a load balancer multiplexing editors that cancel 45% of requests is never cut (${name})`, async (t) => {
  const g = await startGateway(t, { extraConfig, modelArgs: ['--ttft-ms', ttft, '--token-ms', '2', '--tokens', '6'] });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  let goaway = false;
  s.on('goaway', () => { goaway = true; });
  const total = 2600;
  const editors = 48;
  // 45% of requests cancelled (9 of every 20, spread evenly: a random pick would let a small
  // window's share drift over one half); deterministic pseudo-random delays (LCG): 1 in 10
  // within 0-2 ms (a fast typist), the rest after 3-60 ms (median ~20 ms).
  let seed = 42;
  const rand = (): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
  let next = 0;
  let cancelled = 0;
  let fastCancels = 0;
  const failures: string[] = [];
  const editor = async (): Promise<void> => {
    while (next < total) {
      const i = next++;
      const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: `e${i}`, stream: true }, headers);
      st.on('error', () => { /* our own cancel */ });
      const done = collect(st);
      if (i % 20 < 9) {
        cancelled++;
        const fast = rand() < 0.1;
        if (fast) fastCancels++;
        const delay = fast ? rand() * 2 : 3 + rand() * 57;
        setTimeout(() => st.close(NGHTTP2_CANCEL), delay);
        await done;
      } else {
        const r = await done;
        if (r.status !== 200 || r.events.at(-1) !== '[DONE]' || !r.complete) failures.push(`request ${i}: ${r.status} ${r.error ?? ''}`);
      }
    }
  };
  await within('the editors', Promise.all(Array.from({ length: editors }, editor)), 240_000);
  t.comment(`${total} requests, ${cancelled} cancelled (${fastCancels} within 2 ms)`);
  t.ok(cancelled > 1000, 'more resets than nghttp2\'s default bucket (1000) on one session');
  t.same(failures, [], 'every request that was not cancelled completed');
  t.notOk(goaway, 'no GOAWAY');
  t.notOk(s.closed || s.destroyed, 'the session is still open');
  const cut = (await g.gw.metrics.clientSessionsCut.get()).values.find((v) => v.labels.reason === 'rapid_reset');
  t.equal(cut?.value ?? 0, 0, 'no session cut');
  const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'after', stream: true });
  t.equal(r.events.at(-1), '[DONE]', 'and it still serves');
});
}
