/**
 * One client cannot hurt the others by not reading: a stream whose client takes no byte for
 * `limits.clientStallMs` is cancelled upstream and reset, and one client session may have only
 * `http2.maxInflightPerSession` requests in flight upstream (more get a coded 429).
 */
import http2 from 'node:http2';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import type { TestGateway } from '../helpers/gateway.ts';
import { collect, connect, open, post, waitFor, within } from '../helpers/h2.ts';
import { FRAME, rawConnect, request, settings } from '../helpers/raw-h2.ts';

const { NGHTTP2_CANCEL } = http2.constants;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;

const outcomes = async (g: TestGateway, outcome: string): Promise<number> => {
  const text = await g.gw.metrics.registry.getSingleMetricAsString('ghostgate_requests_total');
  let n = 0;
  for (const line of text.split('\n')) if (line.includes(`outcome="${outcome}"`)) n += Number(line.split(' ').at(-1));
  return n;
};
const errors = async (g: TestGateway, code: string): Promise<number> =>
  (await g.gw.metrics.errors.get()).values.find((v) => v.labels.code === code)?.value ?? 0;

t.test('a reader that never reads: its streams are cancelled upstream; a bystander sees no failure', async (t) => {
  const g = await startGateway(t, {
    extraConfig: 'limits: { clientStallMs: 800 }\nhttp2: { maxInflightPerSession: 40 }',
    modelArgs: ['--ttft-ms', '5', '--token-ms', '2', '--tokens', '8'],
  });
  // The bad client: a flow-control window of 0 (it accepts no DATA), 100 long completions.
  const c = await rawConnect(g.url, settings({ [SETTINGS_INITIAL_WINDOW_SIZE]: 0 }));
  t.teardown(() => c.socket.destroy());
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'never read', stream: true });
  const frames: Buffer[] = [];
  const ids: number[] = [];
  for (let i = 0, id = 1; i < 100; i++, id += 2) {
    ids.push(id);
    frames.push(request(id, '/v1/completions', body, [['x-request-id', `stall-${id}`], ['x-tokens', '5000'], ['x-token-ms', '1']]));
  }
  c.socket.write(Buffer.concat(frames));

  // The bystander, on its own connection, while that goes on.
  const b = await connect(g.url);
  t.teardown(() => b.close());
  let badDone = false;
  const bystander = (async () => {
    const results: Array<{ status: number; done: boolean }> = [];
    let after = 0;
    while (after < 10) {
      const batch = await Promise.all(Array.from({ length: 4 }, () => post(b, '/v1/completions', { model: 'ghost-small', prompt: 'by', stream: true })));
      for (const r of batch) results.push({ status: r.status, done: r.events.at(-1) === '[DONE]' && r.complete });
      if (badDone) after++;
    }
    return results;
  })();

  // Every stream of the bad client ends: refused over the cap, or reset once stalled.
  await waitFor('the bad client\'s streams to end', async () => (await outcomes(g, 'client_stalled')) + (await errors(g, 'GW_ERR_REQ_TOO_MANY_IN_FLIGHT')) >= 100, 60_000);
  badDone = true;
  const stalled = await outcomes(g, 'client_stalled');
  const refused = await errors(g, 'GW_ERR_REQ_TOO_MANY_IN_FLIGHT');
  t.comment(`${stalled} stalled and reset, ${refused} refused over the cap`);
  t.equal(stalled + refused, 100);
  t.ok(refused >= 1, 'the cap refused some');
  t.ok(stalled >= 1 && stalled <= 100 - refused, 'the rest were cut when stalled');
  const resetStreams = (): number => {
    const resets = new Set(c.frames.filter((f) => f.type === FRAME.RST_STREAM).map((f) => f.streamId));
    return ids.filter((id) => resets.has(id)).length;
  };
  await waitFor('RST_STREAM for each stalled stream', () => resetStreams() >= stalled, 10_000);
  t.equal(resetStreams(), stalled, 'the client got RST_STREAM for each stalled stream, and only those');
  await waitFor('the model to see every forwarded stream cancelled', async () => (await g.modelStats()).aborts.filter((a) => a.id.startsWith('stall-')).length >= stalled, 10_000);
  const aborts = (await g.modelStats()).aborts.filter((a) => a.id.startsWith('stall-'));
  t.ok(aborts.every((a) => a.rstCode === NGHTTP2_CANCEL), 'each cancelled upstream with RST_STREAM(CANCEL)');

  const results = await within('the bystander', bystander, 60_000);
  t.ok(results.length >= 40, `bystander made ${results.length} requests`);
  t.same(results.filter((r) => r.status !== 200 || !r.done), [], 'every bystander request completed');
  await waitFor('nothing in flight', () => g.gw.runtime.inflight === 0, 10_000);
});

t.test('the per-session cap: the excess gets 429 GW_ERR_REQ_TOO_MANY_IN_FLIGHT with Retry-After; other sessions are not affected', async (t) => {
  const g = await startGateway(t, {
    extraConfig: 'http2: { maxInflightPerSession: 4 }',
    modelArgs: ['--ttft-ms', '3000', '--token-ms', '1', '--tokens', '4'],
  });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const all = Array.from({ length: 10 }, (_, i) => collect(open(s, '/v1/completions', { model: 'ghost-small', prompt: `c${i}`, stream: true })));
  const other = await connect(g.url);
  t.teardown(() => other.close());
  await waitFor('4 requests at the model', async () => (await g.modelStats()).inFlight >= 4, 10_000);
  // Another session has its own allowance.
  const o = await post(other, '/v1/completions', { model: 'ghost-small', prompt: 'other', stream: true, max_tokens: 1 }, { 'x-ttft-ms': '0' });
  t.equal(o.status, 200, 'another session is served');
  const res = await within('the 10 requests', Promise.all(all), 30_000);
  const refused = res.filter((r) => r.status === 429);
  t.equal(res.filter((r) => r.status === 200 && r.events.at(-1) === '[DONE]').length, 4, '4 served');
  t.equal(refused.length, 6, '6 refused');
  for (const r of refused) {
    t.equal((JSON.parse(r.text) as { error: { code: string } }).error.code, 'GW_ERR_REQ_TOO_MANY_IN_FLIGHT');
    t.equal(r.headers['retry-after'], '1');
  }
  const after = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'again', stream: true }, { 'x-ttft-ms': '0' });
  t.equal(after.status, 200, 'once they end, the session may send again');
});
