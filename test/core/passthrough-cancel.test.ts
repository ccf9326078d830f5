/**
 * Passthrough routes: a client that leaves cancels the upstream request at once, and shutdown
 * lets passthrough requests finish within the grace period and cuts them (upstream told) at its
 * deadline. Real HTTP/2 and HTTP/1.1 clients over loopback, a real HTTP/1.1 upstream that holds
 * requests and sees its connection closed (test/helpers/fake-openai.ts).
 *
 * The cancel tests print how long each cancel took to reach the upstream (from the client's
 * RST_STREAM / socket close to the upstream seeing its request's connection close).
 */
import http from 'node:http';
import http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import t from 'tap';
import type { Test } from 'tap';
import { passthroughRig } from '../helpers/fake-openai.ts';
import type { FakeOpenAI, Held } from '../helpers/fake-openai.ts';
import type { TestGateway } from '../helpers/gateway.ts';
import { collect, connect, firstData, post, post1, waitFor, within } from '../helpers/h2.ts';

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR } = http2.constants;
const EMBED = { model: 'text-embedding-3-small', input: 'hello' };
const SLOW = '  - { path: /v1/files, upstream: openai }';

/** The rig with the held path (/v1/files/slow), and an HTTP/2 session to its gateway. */
async function rig(t: Test): Promise<Awaited<ReturnType<typeof passthroughRig>> & { s: ClientHttp2Session }> {
  const r = await passthroughRig(t, SLOW);
  const s = await connect(r.g.url);
  t.teardown(() => s.close());
  return { ...r, s };
}

/** A POST to the held path over HTTP/2 (the stream is returned unread). */
function slow2(s: ClientHttp2Session, token: string): ClientHttp2Stream {
  const st = s.request({ ':method': 'POST', ':path': '/v1/files/slow', 'content-type': 'application/json', authorization: `Bearer ${token}` });
  st.on('error', () => {});
  st.end('{}');
  return st;
}

/** A POST to the held path over HTTP/1.1 on a connection of its own. */
function slow1(url: string, token: string): http.ClientRequest {
  const req = http.request(`${url}/v1/files/slow`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': 2, authorization: `Bearer ${token}` } });
  req.on('error', () => {});
  req.end('{}');
  return req;
}

/** An HTTP/1.1 request's first response body bytes at the client. */
function firstData1(req: http.ClientRequest): Promise<unknown> {
  return new Promise((r) => req.once('response', (res) => res.once('data', r)));
}

/** The upstream starts answering these (headers and a first part of the body); resolves once `arrived` (the first bytes at the clients). */
async function startAnswers(held: Held[], arrived: Array<Promise<unknown>>): Promise<void> {
  for (const h of held) { h.res.writeHead(200, { 'content-type': 'application/octet-stream' }); h.res.write('part one'); }
  await within('the first bytes at the clients', Promise.all(arrived));
}

/** Milliseconds, as `p50 / p90 / max` over the samples. */
function spread(ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  const at = (q: number): string => s[Math.min(s.length - 1, Math.floor(q * s.length))]!.toFixed(2);
  return `p50 ${at(0.5)} ms, p90 ${at(0.9)} ms, max ${s.at(-1)!.toFixed(2)} ms over ${s.length}`;
}

async function passthroughCount(adminUrl: string, status: string): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const m = new RegExp(`^ghostgate_passthrough_requests_total\\{path="/v1/files",upstream="openai",status="${status}"\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** Nothing held at the upstream any more; the route still serves, and nothing stays in flight on the gateway's runtime. */
async function drained(t: Test, g: TestGateway, up: FakeOpenAI, s: ClientHttp2Session, token: string): Promise<void> {
  await waitFor('the upstream to hold no request', () => up.inFlight() === 0);
  t.equal(up.inFlight(), 0, 'no upstream request left open');
  t.equal((await post(s, '/v1/embeddings', EMBED, { authorization: `Bearer ${token}` })).status, 200, 'the route still serves (HTTP/2)');
  const agent = new http.Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  t.equal((await post1(`${g.url}/v1/embeddings`, EMBED, { authorization: `Bearer ${token}` }, agent)).status, 200, 'and HTTP/1.1 keep-alive');
  await waitFor('the runtime to have nothing in flight', () => g.gw.runtime.inflight === 0);
  t.equal(g.gw.runtime.inflight, 0, 'cancelled and answered requests have left the runtime');
}

/** An HTTP/1.1 response read to its end, or to its cut (`complete` false). */
function reply1(req: http.ClientRequest): Promise<{ status: number; text: string; complete: boolean }> {
  return new Promise((resolve) => {
    let status = 0; let text = ''; let complete = false;
    req.on('response', (res) => {
      status = res.statusCode!;
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => { complete = res.complete; });
      res.on('error', () => {});
    });
    req.on('close', () => resolve({ status, text, complete }));
  });
}

t.test('passthrough: an HTTP/2 client\'s RST_STREAM before the upstream answered cancels the upstream request at once (50 times)', async (t) => {
  const { g, up, token, s } = await rig(t);
  const took: number[] = [];
  for (let i = 0; i < 50; i++) {
    let st!: ClientHttp2Stream;
    await up.nextHeld(() => { st = slow2(s, token); });
    let at = 0;
    const h = await up.nextGone(() => { at = performance.now(); st.close(NGHTTP2_CANCEL); });
    took.push(h.goneAt - at);
  }
  t.comment(`HTTP/2 cancel to upstream: ${spread(took)}`);
  t.equal(up.held.filter((h) => h.gone).length, 50, 'every cancel reached the upstream');
  await drained(t, g, up, s, token);
  t.equal(await passthroughCount(g.adminUrl, 'cancelled'), 50, 'counted as status="cancelled"');
  t.equal(await passthroughCount(g.adminUrl, 'error'), 0, 'not as upstream errors');
});

t.test('passthrough: an HTTP/1.1 client closing its socket before the upstream answered cancels the upstream request at once (20 times)', async (t) => {
  const { g, up, token, s } = await rig(t);
  const took: number[] = [];
  for (let i = 0; i < 20; i++) {
    let req!: http.ClientRequest;
    await up.nextHeld(() => { req = slow1(g.url, token); });
    let at = 0;
    const h = await up.nextGone(() => { at = performance.now(); req.destroy(); });
    took.push(h.goneAt - at);
  }
  t.comment(`HTTP/1.1 cancel to upstream: ${spread(took)}`);
  await drained(t, g, up, s, token);
});

t.test('passthrough: a client that leaves mid-response (after the upstream\'s headers) closes the upstream request too', async (t) => {
  const { g, up, token, s } = await rig(t);
  let st!: ClientHttp2Stream;
  const h = await up.nextHeld(() => { st = slow2(s, token); });
  await startAnswers([h], [firstData(st)]);
  await up.nextGone(() => st.close(NGHTTP2_CANCEL));
  await drained(t, g, up, s, token);
});

t.test('passthrough: an upstream that fails mid-body cuts the client\'s response, which never ends cleanly (HTTP/2 and HTTP/1.1)', async (t) => {
  const { g, up, token, s } = await rig(t);
  let st!: ClientHttp2Stream;
  const h2 = await up.nextHeld(() => { st = slow2(s, token); });
  const got2 = collect(st);
  const first2 = firstData(st);
  let req!: http.ClientRequest;
  const h1 = await up.nextHeld(() => { req = slow1(g.url, token); });
  const first1 = firstData1(req);
  const got1 = reply1(req);
  await startAnswers([h2, h1], [first2, first1]);
  for (const h of [h2, h1]) h.res.destroy();
  const r2 = await within('the HTTP/2 response', got2);
  t.equal(r2.text, 'part one');
  t.notOk(r2.complete, 'HTTP/2: does not end cleanly');
  t.equal(r2.rstCode, NGHTTP2_INTERNAL_ERROR, 'HTTP/2: RST_STREAM(INTERNAL_ERROR)');
  const r1 = await within('the HTTP/1.1 response', got1);
  t.equal(r1.text, 'part one');
  t.notOk(r1.complete, 'HTTP/1.1: cut before its end');
  await drained(t, g, up, s, token);
});

t.test('passthrough on shutdown: requests in flight finish within shutdown.graceMs (HTTP/2 and HTTP/1.1); the upstream pool closes with the gateway', async (t) => {
  const { g, up, token, s } = await rig(t);
  let st!: ClientHttp2Stream;
  const h2 = await up.nextHeld(() => { st = slow2(s, token); });
  let req!: http.ClientRequest;
  const h1 = await up.nextHeld(() => { req = slow1(g.url, token); });
  const got2 = collect(st);
  const got1 = reply1(req);
  const closed = g.gw.close(60_000);
  await waitFor('the gateway to refuse new requests', () => g.gw.closing);
  for (const h of [h2, h1]) h.res.writeHead(200, { 'content-type': 'application/json' }).end('{"done":true}');
  for (const [name, r] of [['HTTP/2', await within('the HTTP/2 answer', got2)], ['HTTP/1.1', await within('the HTTP/1.1 answer', got1)]] as const) {
    t.equal(r.status, 200, name);
    t.equal(r.text, '{"done":true}', `${name}: the whole answer`);
    t.ok(r.complete, `${name}: ended cleanly`);
  }
  t.notOk(h2.gone || h1.gone, 'the upstream was not cut');
  await within('the gateway to close once nothing is in flight', closed);
  await waitFor('the gateway\'s connections to the upstream to close', async () => (await up.connections()) === 0);
  t.equal(await up.connections(), 0, 'no connection to the upstream left open');
});

t.test('passthrough on shutdown: at the deadline, requests still running are cut and their upstream requests cancelled: a coded 503 before the response, a cut body after (HTTP/2 and HTTP/1.1)', async (t) => {
  const { g, up, token, s } = await rig(t);
  let st!: ClientHttp2Stream;
  await up.nextHeld(() => { st = slow2(s, token); });
  let req!: http.ClientRequest;
  await up.nextHeld(() => { req = slow1(g.url, token); });
  const waiting2 = collect(st);
  const waiting1 = reply1(req);
  // Two more whose responses have begun: headers and a first part of the body are at the client.
  const h2 = await up.nextHeld(() => { st = slow2(s, token); });
  const started2 = collect(st);
  const first2 = firstData(st);
  const h1 = await up.nextHeld(() => { req = slow1(g.url, token); });
  const first1 = firstData1(req);
  const started1 = reply1(req);
  await startAnswers([h2, h1], [first2, first1]);
  // A short grace: the deadline comes while all four are still running (nothing ends them).
  const closed = g.gw.close(200);
  await waitFor('the upstream to see all four requests cut', () => up.held.every((h) => h.gone));
  for (const [name, r] of [['HTTP/2', await within('the HTTP/2 reply', waiting2)], ['HTTP/1.1', await within('the HTTP/1.1 reply', waiting1)]] as const) {
    t.equal(r.status, 503, `${name}: ${r.text}`);
    t.equal(JSON.parse(r.text).error.code, 'GW_ERR_SERVER_SHUTTING_DOWN', name);
  }
  const cut2 = await within('the HTTP/2 response', started2);
  t.equal(cut2.status, 200);
  t.notOk(cut2.complete, 'HTTP/2: the started response does not end cleanly');
  t.equal(cut2.rstCode, NGHTTP2_INTERNAL_ERROR, 'HTTP/2: RST_STREAM(INTERNAL_ERROR)');
  const cut1 = await within('the HTTP/1.1 response', started1);
  t.equal(cut1.status, 200);
  t.notOk(cut1.complete, 'HTTP/1.1: the started response is cut');
  await within('the gateway to close', closed);
  t.equal(up.inFlight(), 0);
  t.match(g.logs.join('\n'), /"requests":4,.*cutting the requests still in flight/, 'the log counts them');
});
