/**
 * The fake model server, run as a real child process and spoken to over loopback with real
 * `node:http2` clients (h2c), `fetch` and `node:http` (HTTP/1.1).
 */
import t from 'tap';
import http from 'node:http';
import http2 from 'node:http2';
import { spawnModelServer } from './fixtures/spawn.ts';
import type { SpawnedModelServer } from './fixtures/spawn.ts';

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_REFUSED_STREAM } = http2.constants;

interface H2Result {
  status: number;
  headers: http2.IncomingHttpHeaders;
  text: string;
  rstCode: number | undefined;
  error: Error | null;
  headersAtMs: number;
  firstDataAtMs: number;
  id: number | undefined;
}

/** One request over an h2 session; resolves on stream close (never rejects). */
function h2req(session: http2.ClientHttp2Session, path: string, body: unknown, headers: Record<string, string> = {},
  onStream?: (s: http2.ClientHttp2Stream) => void): Promise<H2Result> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const s = session.request({ ':method': body === undefined ? 'GET' : 'POST', ':path': path, 'content-type': 'application/json', ...headers });
    const r: H2Result = { status: 0, headers: {}, text: '', rstCode: undefined, error: null, headersAtMs: -1, firstDataAtMs: -1, id: undefined };
    s.on('response', (h) => { r.status = Number(h[':status']); r.headers = h; r.headersAtMs = performance.now() - t0; });
    s.setEncoding('utf8');
    s.on('data', (d: string) => { if (r.firstDataAtMs < 0) r.firstDataAtMs = performance.now() - t0; r.text += d; });
    s.on('error', (e: Error) => { r.error = e; });
    s.on('close', () => { r.rstCode = s.rstCode; r.id = s.id; resolve(r); });
    if (body === undefined) s.end(); else s.end(typeof body === 'string' ? body : JSON.stringify(body));
    onStream?.(s);
  });
}

function sseData(text: string): string[] {
  return text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
}

async function getJson(url: string): Promise<any> {
  const res = await fetch(url);
  return res.json();
}

/** Poll `/_stats` until `pred` holds (the server records an abort when it notices the RST/FIN). */
async function waitStats(url: string, pred: (s: any) => boolean, ms = 15_000): Promise<any> {
  const end = Date.now() + ms;
  for (;;) {
    const s = await getJson(`${url}/_stats`);
    if (pred(s) || Date.now() > end) return s;
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let ms: SpawnedModelServer;
let session: http2.ClientHttp2Session;

t.before(async () => {
  ms = await spawnModelServer(['--ttft-ms', '30', '--token-ms', '5', '--tokens', '6']);
  session = http2.connect(ms.url);
});
t.teardown(async () => {
  session.close();
  await ms.stop();
});

t.test('prints a listening line with the real port', async (t) => {
  t.ok(ms.port > 0);
  t.equal(ms.host, '127.0.0.1');
});

t.test('h2c streaming completion runs to [DONE]', async (t) => {
  const r = await h2req(session, '/v1/completions', { model: 'ghost', prompt: 'def f(', stream: true });
  t.equal(r.status, 200);
  t.equal(r.headers['content-type'], 'text/event-stream');
  t.equal(r.headers['cache-control'], 'no-cache');
  const ev = sseData(r.text);
  t.equal(ev.length, 7, '6 tokens + [DONE]');
  t.equal(ev[6], '[DONE]');
  const chunks = ev.slice(0, 6).map((e) => JSON.parse(e));
  t.equal(chunks[0].object, 'text_completion');
  t.equal(chunks[0].model, 'ghost');
  t.match(chunks[0].id, /^cmpl-\d+$/);
  t.equal(chunks[0].choices[0].finish_reason, null);
  t.equal(typeof chunks[0].choices[0].text, 'string');
  t.ok(['length', 'stop'].includes(chunks[5].choices[0].finish_reason));
  t.ok(chunks.map((c) => c.choices[0].text).join('').length > 0);
  t.equal(r.rstCode, 0);
});

t.test('max_tokens caps the stream and finishes with "length"', async (t) => {
  const r = await h2req(session, '/v1/completions', { model: 'ghost', prompt: 'x', stream: true, max_tokens: 2 });
  const ev = sseData(r.text);
  t.equal(ev.length, 3);
  t.equal(JSON.parse(ev[1]).choices[0].finish_reason, 'length');
});

t.test('HTTP/1.1 streaming runs to [DONE]', async (t) => {
  const res = await fetch(`${ms.url}/v1/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'ghost', prompt: 'x', stream: true }),
  });
  t.equal(res.status, 200);
  t.equal(res.headers.get('content-type'), 'text/event-stream');
  const ev = sseData(await res.text());
  t.equal(ev.length, 7);
  t.equal(ev[6], '[DONE]');
  const stats = await getJson(`${ms.url}/_stats`);
  t.ok(stats.h1Connections >= 1);
});

t.test('non-streaming completion (h2 and HTTP/1.1)', async (t) => {
  const r = await h2req(session, '/v1/completions', { model: 'ghost', prompt: 'abcdefgh', max_tokens: 4 });
  t.equal(r.status, 200);
  t.equal(r.headers['content-type'], 'application/json');
  const j = JSON.parse(r.text);
  t.equal(j.object, 'text_completion');
  t.equal(j.choices[0].finish_reason, 'length');
  t.equal(j.usage.completion_tokens, 4);
  t.equal(j.usage.prompt_tokens, 2);
  t.equal(j.usage.total_tokens, 6);
  const res = await fetch(`${ms.url}/v1/engines/codegen/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'x' }) });
  const k = await res.json() as any;
  t.equal(res.status, 200);
  t.equal(k.model, 'codegen');
  t.equal(k.choices[0].text.length > 0, true);
  t.equal(k.usage.completion_tokens, 6);
  const c = await h2req(session, '/v1/chat/completions', { model: 'ghost', messages: [{ role: 'user', content: 'hi' }] });
  const cj = JSON.parse(c.text);
  t.equal(cj.object, 'chat.completion');
  t.equal(cj.choices[0].message.role, 'assistant');
  t.equal(typeof cj.choices[0].message.content, 'string');
});

t.test('chat streaming', async (t) => {
  const r = await h2req(session, '/v1/chat/completions', { model: 'ghost', messages: [{ role: 'user', content: 'hi' }], stream: true });
  t.equal(r.status, 200);
  const ev = sseData(r.text);
  t.equal(ev.at(-1), '[DONE]');
  const chunks = ev.slice(0, -1).map((e) => JSON.parse(e));
  t.equal(chunks.length, 6);
  t.equal(chunks[0].object, 'chat.completion.chunk');
  t.equal(chunks[0].delta?.role ?? chunks[0].choices[0].delta.role, 'assistant');
  for (const c of chunks) t.equal(typeof c.choices[0].delta.content, 'string');
  t.ok(chunks.at(-1).choices[0].finish_reason);
});

t.test('headers go out at once; x-headers-after-ttft delays them to the first token', async (t) => {
  // A 2 s time to first token: 'at once' (< 1 s) and 'at the first token' (>= 2 s) stay apart
  // however busy the machine (timers never fire early; a stall of a second is possible).
  const body = { prompt: 'x', stream: true };
  const a = await h2req(session, '/v1/completions', body, { 'x-ttft-ms': '2000', 'x-tokens': '1' });
  t.ok(a.headersAtMs < 1000, `headers after ${a.headersAtMs.toFixed(1)} ms`);
  t.ok(a.firstDataAtMs >= 1990, `first token after ${a.firstDataAtMs.toFixed(1)} ms`);
  const b = await h2req(session, '/v1/completions', body, { 'x-ttft-ms': '2000', 'x-tokens': '1', 'x-headers-after-ttft': '1' });
  t.ok(b.headersAtMs >= 1990, `delayed headers after ${b.headersAtMs.toFixed(1)} ms`);
  t.equal(sseData(b.text).at(-1), '[DONE]');
});

t.test('abort before the first token is recorded with RST CANCEL', async (t) => {
  const id = 'abort-before-1';
  const r = await h2req(session, '/v1/completions', { prompt: 'x', stream: true }, { 'x-request-id': id, 'x-ttft-ms': '60000' }, (s) => {
    s.once('response', () => s.close(NGHTTP2_CANCEL));
  });
  t.equal(r.rstCode, NGHTTP2_CANCEL);
  const stats = await waitStats(ms.url, (s) => s.aborts.some((a: any) => a.id === id));
  const rec = stats.aborts.find((a: any) => a.id === id);
  t.ok(rec, 'abort recorded');
  t.equal(rec.phase, 'before-first-token');
  t.equal(rec.rstCode, 8);
  t.equal(rec.tokensSent, 0);
  t.equal(rec.tokensAfterAbort, 0);
  t.ok(rec.abortedAtMs < 60_000, `noticed at ${rec.abortedAtMs} ms, before the first token was due`);
  t.equal(rec.protocol, 'h2');
});

t.test('abort mid-stream is recorded as streaming (h2 and HTTP/1.1)', async (t) => {
  const id = 'abort-mid-h2';
  await h2req(session, '/v1/completions', { prompt: 'x', stream: true }, { 'x-request-id': id, 'x-tokens': '1000' }, (s) => {
    let n = 0;
    s.on('data', () => { if (++n === 3) s.close(NGHTTP2_CANCEL); });
  });
  const id1 = 'abort-mid-h1';
  await new Promise<void>((resolve) => {
    const req = http.request(`${ms.url}/v1/completions`, { method: 'POST', headers: { 'x-request-id': id1, 'x-tokens': '1000' } }, (res) => {
      let n = 0;
      res.on('data', () => { if (++n === 3) { req.destroy(); resolve(); } });
    });
    req.on('error', () => {});
    req.end(JSON.stringify({ prompt: 'x', stream: true }));
  });
  const stats = await waitStats(ms.url, (s) => s.aborts.some((a: any) => a.id === id1) && s.aborts.some((a: any) => a.id === id));
  const h2 = stats.aborts.find((a: any) => a.id === id);
  t.equal(h2.phase, 'streaming');
  t.equal(h2.rstCode, 8);
  t.ok(h2.tokensSent >= 3 && h2.tokensSent < 1000, `tokensSent ${h2.tokensSent}`);
  const h1 = stats.aborts.find((a: any) => a.id === id1);
  t.ok(h1, 'h1 abort recorded');
  t.equal(h1.phase, 'streaming');
  t.equal(h1.rstCode, null);
  t.equal(h1.protocol, 'h1');
  t.ok(h1.tokensSent >= 1 && h1.tokensSent < 1000);
  t.equal(stats.inFlight, 0);
});

t.test('x-fail-after-tokens ends the stream abnormally', async (t) => {
  const before = (await getJson(`${ms.url}/_stats`)).failedInjected;
  const r = await h2req(session, '/v1/completions', { prompt: 'x', stream: true }, { 'x-fail-after-tokens': '2' });
  t.equal(r.status, 200);
  t.equal(r.rstCode, NGHTTP2_INTERNAL_ERROR);
  const ev = sseData(r.text);
  t.equal(ev.length, 2);
  t.notOk(ev.includes('[DONE]'));
  const res = await fetch(`${ms.url}/v1/completions`, {
    method: 'POST', headers: { 'x-fail-after-tokens': '2' }, body: JSON.stringify({ prompt: 'x', stream: true }),
  });
  t.equal(res.status, 200);
  await t.rejects(res.text(), 'HTTP/1.1 body is cut off');
  const stats = await getJson(`${ms.url}/_stats`);
  t.equal(stats.failedInjected - before, 2);
});

t.test('x-status answers an injected error at once', async (t) => {
  const r = await h2req(session, '/v1/completions', { prompt: 'x', stream: true }, { 'x-status': '503', 'x-ttft-ms': '5000' });
  t.equal(r.status, 503);
  const j = JSON.parse(r.text);
  t.equal(j.error.type, 'server_error');
  t.equal(typeof j.error.message, 'string');
});

t.test('invalid JSON is 400, unknown path is 404', async (t) => {
  const a = await h2req(session, '/v1/completions', '{not json');
  t.equal(a.status, 400);
  t.equal(JSON.parse(a.text).error.type, 'invalid_request_error');
  const b = await fetch(`${ms.url}/v2/nothing`, { method: 'POST', body: '{}' });
  t.equal(b.status, 404);
  t.ok(((await b.json()) as any).error.message);
});

t.test('/_requests shows the headers as received', async (t) => {
  await h2req(session, '/v1/completions', { prompt: 'hello', max_tokens: 1 },
    { 'x-request-id': 'req-echo-1', authorization: 'Bearer upstream-key', 'x-forwarded-for': '10.0.0.1' });
  const list = await getJson(`${ms.url}/_requests`);
  t.ok(Array.isArray(list) && list.length <= 50);
  const rec = list.find((r: any) => r.id === 'req-echo-1');
  t.ok(rec);
  t.equal(rec.path, '/v1/completions');
  t.equal(rec.headers.authorization, 'Bearer upstream-key');
  t.equal(rec.headers['x-forwarded-for'], '10.0.0.1');
  t.same(rec.body, { prompt: 'hello', max_tokens: 1 });
  t.equal(typeof rec.at, 'number');
});

t.test('/_reset zeroes the stats', async (t) => {
  const before = await getJson(`${ms.url}/_stats`);
  t.ok(before.requests > 0);
  const res = await fetch(`${ms.url}/_reset`, { method: 'POST' });
  t.equal(res.status, 200);
  const s = await getJson(`${ms.url}/_stats`);
  t.equal(s.requests, 0);
  t.equal(s.completed, 0);
  t.equal(s.aborted, 0);
  t.equal(s.tokensSent, 0);
  t.same(s.aborts, []);
  t.same(await getJson(`${ms.url}/_requests`), []);
  t.hasStrict(s, { sessions: { goawaysSent: 0 }, inFlight: 0, failedInjected: 0, tokensAfterAbort: 0 });
});

t.test('--goaway-every 5', async (t) => {
  const g = await spawnModelServer(['--ttft-ms', '80', '--token-ms', '5', '--tokens', '3', '--goaway-every', '5']);
  t.teardown(() => g.stop());

  t.test('sequential: GOAWAY after the 5th stream, all 5 complete', async (t) => {
    const s = http2.connect(g.url);
    const goaway = new Promise<[number, number]>((resolve) => s.once('goaway', (code, last) => resolve([code, last])));
    const results: H2Result[] = [];
    for (let i = 0; i < 5; i++) results.push(await h2req(s, '/v1/completions', { prompt: 'x', stream: true }));
    const [code, last] = await goaway;
    t.equal(code, 0, 'NO_ERROR');
    t.equal(last, 9, 'last accepted stream id is the 5th stream');
    for (const r of results) t.equal(sseData(r.text).at(-1), '[DONE]');
    s.close();
  });

  t.test('concurrent: streams up to the last id complete, the rest are refused', async (t) => {
    const s = http2.connect(g.url);
    s.on('error', () => {});
    const goaway = new Promise<number>((resolve) => s.once('goaway', (_code, last) => resolve(last)));
    await new Promise<void>((resolve) => s.once('remoteSettings', () => resolve()));
    const all = await Promise.all(Array.from({ length: 8 }, () => h2req(s, '/v1/completions', { prompt: 'x', stream: true })));
    const last = await goaway;
    t.equal(last, 9);
    const done = all.filter((r) => r.id !== undefined && r.id <= last);
    const refused = all.filter((r) => !(r.id !== undefined && r.id <= last));
    t.equal(done.length, 5);
    for (const r of done) {
      t.equal(r.status, 200);
      t.equal(sseData(r.text).at(-1), '[DONE]', `stream ${r.id} completed`);
    }
    t.equal(refused.length, 3);
    for (const r of refused) {
      t.equal(r.status, 0, 'no response');
      t.equal(r.rstCode, NGHTTP2_REFUSED_STREAM, `stream ${r.id} refused`);
    }
    s.destroy();
    const stats = await getJson(`${g.url}/_stats`);
    t.equal(stats.sessions.goawaysSent, 2);
    t.equal(stats.completed, 10);
    t.equal(stats.aborted, 0);
  });
});

t.test('--key', async (t) => {
  const k = await spawnModelServer(['--ttft-ms', '1', '--token-ms', '1', '--tokens', '2', '--key', 'sekret-123']);
  t.teardown(() => k.stop());
  const body = JSON.stringify({ prompt: 'x' });
  const wrong = await fetch(`${k.url}/v1/completions`, { method: 'POST', headers: { authorization: 'Bearer presented-wrong-key' }, body });
  t.equal(wrong.status, 401);
  const text = await wrong.text();
  t.notMatch(text, 'presented-wrong-key', 'never echoes the presented key');
  t.equal(JSON.parse(text).error.type, 'invalid_request_error');
  const none = await fetch(`${k.url}/v1/completions`, { method: 'POST', body });
  t.equal(none.status, 401);
  await none.text();
  const ok = await fetch(`${k.url}/v1/completions`, { method: 'POST', headers: { authorization: 'Bearer sekret-123' }, body });
  t.equal(ok.status, 200);
  t.equal(((await ok.json()) as any).usage.completion_tokens, 2);
  const s = http2.connect(k.url);
  const r = await h2req(s, '/v1/completions', { prompt: 'x', stream: true }, { authorization: 'Bearer sekret-123' });
  t.equal(sseData(r.text).at(-1), '[DONE]');
  s.close();
});

/** An SSE request over HTTP/1.1; resolves at its end or its error (never rejects). */
function h1stream(url: string, onFirstData: () => void): Promise<{ status: number; text: string; complete: boolean }> {
  return new Promise((resolve) => {
    const req = http.request(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { if (text === '') onFirstData(); text += d; });
      res.on('end', () => resolve({ status: res.statusCode!, text, complete: res.complete }));
      res.on('error', () => resolve({ status: res.statusCode!, text, complete: false }));
    });
    req.on('error', () => resolve({ status: 0, text: '', complete: false }));
    req.end(JSON.stringify({ prompt: 'x', stream: true }));
  });
}

t.test('SIGTERM drains: in-flight streams finish, new requests are refused, then it exits 0', async (t) => {
  const x = await spawnModelServer(['--ttft-ms', '5', '--token-ms', '30', '--tokens', '10']);
  t.teardown(() => { x.child.kill('SIGKILL'); });
  const exited = new Promise<number | null>((r) => x.child.once('exit', (code) => r(code)));
  const s = http2.connect(x.url);
  s.on('error', () => {});
  t.teardown(() => s.destroy());
  const goaway = new Promise<number>((r) => s.once('goaway', (_code, lastId: number) => r(lastId)));
  const results: H2Result[] = [];
  let h1!: ReturnType<typeof h1stream>;
  let started = 0;
  const firstData = new Promise<void>((resolve) => {
    const one = (): void => { if (++started === 4) resolve(); };
    for (let i = 0; i < 3; i++) void h2req(s, '/v1/completions', { prompt: 'x', stream: true }, {}, (st) => st.once('data', one)).then((r) => results.push(r));
    h1 = h1stream(x.url, one);
  });
  await firstData;
  x.child.kill('SIGTERM');
  const lastId = await goaway;
  t.equal(lastId, 5, 'GOAWAY names the last stream it took (the third)');
  // The listener is closed: a new connection is refused.
  const refused = await new Promise<string>((resolve) => {
    const c = http2.connect(x.url);
    c.once('connect', () => { c.destroy(); resolve('connected'); });
    c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
  t.equal(refused, 'ECONNREFUSED', 'new connections are refused while draining');
  const h1r = await h1;
  t.equal(await exited, 0, 'exit 0 once drained');
  t.equal(results.length, 3);
  for (const r of results) {
    t.equal(r.status, 200);
    t.equal(r.rstCode, http2.constants.NGHTTP2_NO_ERROR);
    t.equal(sseData(r.text).length, 11, 'all 10 tokens and [DONE]');
    t.equal(sseData(r.text).at(-1), '[DONE]');
  }
  t.ok(h1r.complete, 'HTTP/1.1 stream finished');
  t.equal(sseData(h1r.text).at(-1), '[DONE]');
});

t.test('SIGTERM drain has a deadline (--drain-ms); a second signal cuts at once', async (t) => {
  for (const second of [false, true]) {
    const x = await spawnModelServer(['--ttft-ms', '60000', '--drain-ms', second ? '600000' : '200']);
    t.teardown(() => { x.child.kill('SIGKILL'); });
    const exited = new Promise<number | null>((r) => x.child.once('exit', (code) => r(code)));
    const s = http2.connect(x.url);
    s.on('error', () => {});
    t.teardown(() => s.destroy());
    const goaway = new Promise<void>((r) => s.once('goaway', () => r()));
    const st = h2req(s, '/v1/completions', { prompt: 'x', stream: true });
    await waitStats(x.url, (v) => v.inFlight === 1);
    x.child.kill('SIGTERM');
    await goaway;
    if (second) x.child.kill('SIGTERM');
    t.equal(await exited, 0, second ? 'second signal: exit 0 at once' : 'deadline: exit 0');
    const r = await st;
    t.not(sseData(r.text).at(-1), '[DONE]', 'the stream that outlived the drain was cut');
  }
});
