/**
 * The reference client against a real h2c server on port 0 that serves /v1/token and
 * /v1/completions with a real AuthService: one session, token fetched once and refreshed on a
 * timer, SSE as an async iterator, abort resets only that stream (server sees CANCEL).
 */
import t from 'tap';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { GhostgateClient, GhostgateError } from '../../client/ghostgate-client.ts';
import { generateApiKey, hashApiKey } from '../../core/auth/index.ts';
import { GatewayError } from '../../core/errors.ts';
import { harness, makeKey, signingEntry } from './helpers.ts';
import { waitFor } from '../helpers/h2.ts';

const { NGHTTP2_CANCEL } = http2.constants;

async function server(t: { teardown(fn: () => unknown): void }, o: { refreshIn?: number } = {}) {
  const h = harness();
  const key = generateApiKey();
  h.dir.write('keys.yaml', `- { sub: alice, hash: "${await hashApiKey(key)}", claims: { plan: pro } }`);
  const auth = await h.compile({ signingKeys: [signingEntry(h, await makeKey('k1'))], credentials: { apiKeys: { file: 'keys.yaml' } } });
  const state = { sessions: 0, exchanges: 0, resets: [] as number[], completed: 0, expireNext: false, subs: [] as string[] };
  const srv = http2.createServer();
  srv.on('session', () => state.sessions++);
  srv.on('stream', (stream, headers) => {
    let body = '';
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => { body += c; });
    stream.on('end', async () => {
      const json = (status: number, v: unknown) => { if (!stream.closed) { stream.respond({ ':status': status, 'content-type': 'application/json' }); stream.end(JSON.stringify(v)); } };
      try {
        if (headers[':path'] === '/v1/token') {
          state.exchanges++;
          const r = await auth.exchange({ headers: headers as Record<string, string>, body: JSON.parse(body), ip: '::1' });
          return json(200, o.refreshIn === undefined ? r : { ...r, refresh_in: o.refreshIn });
        }
        const authz = String(headers.authorization ?? '');
        if (state.expireNext) { state.expireNext = false; throw new GatewayError('GW_ERR_AUTH_TOKEN_EXPIRED'); }
        const claims = await auth.verify(authz.slice(7));
        state.subs.push(String(claims.sub));
        const n = (JSON.parse(body) as { n?: number }).n ?? 5;
        stream.respond({ ':status': 200, 'content-type': 'text/event-stream' });
        stream.on('close', () => { if (stream.rstCode) state.resets.push(stream.rstCode); });
        let i = 0;
        const tick = setInterval(() => {
          if (stream.closed || stream.destroyed) return clearInterval(tick);
          if (i < n) stream.write(`data: ${JSON.stringify({ choices: [{ text: `t${i++}` }] })}\n\n`);
          else { clearInterval(tick); stream.end('data: [DONE]\n\n'); state.completed++; }
        }, 15);
      } catch (e) {
        if (e instanceof GatewayError) json(e.status, e.toJSON()); else throw e;
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  t.teardown(() => new Promise<void>((r) => { h.dir.remove(); srv.close(() => r()); }));
  return { url, key, state };
}

const texts = async (it: AsyncIterable<unknown>) => { const out: string[] = []; for await (const e of it) out.push((e as { choices: Array<{ text: string }> }).choices[0].text); return out; };

t.test('one session, one token exchange, SSE events in order', async (t) => {
  const s = await server(t);
  const gg = new GhostgateClient({ url: s.url, credential: s.key, headers: { 'editor-version': 'vscode/1.95.0' } });
  t.teardown(() => gg.close());
  t.same(await texts(gg.complete({ model: 'ghost-small', prompt: 'x', n: 3 })), ['t0', 't1', 't2']);
  const [a, b] = await Promise.all([texts(gg.complete({ n: 2 })), texts(gg.complete({ n: 4 }))]);
  t.same([a.length, b.length], [2, 4], 'concurrent streams on the session');
  t.equal(s.state.exchanges, 1, 'token fetched once');
  t.equal(s.state.sessions, 1, 'one HTTP/2 session');
  t.same(s.state.subs, ['alice', 'alice', 'alice']);
});

t.test('abort resets only that stream with CANCEL; the session stays', async (t) => {
  const s = await server(t);
  const gg = new GhostgateClient({ url: s.url, credential: s.key });
  t.teardown(() => gg.close());
  const ac = new AbortController();
  const got: string[] = [];
  const other = texts(gg.complete({ n: 12 })); // a neighbour stream on the same session
  const err = await (async () => {
    try {
      for await (const e of gg.complete({ n: 50 }, { signal: ac.signal })) {
        got.push((e as { choices: Array<{ text: string }> }).choices[0].text);
        if (got.length === 2) ac.abort();
      }
    } catch (e) { return e as Error; }
    return undefined;
  })();
  t.equal(err?.name, 'AbortError');
  t.same(got, ['t0', 't1']);
  t.equal((await other).length, 12, 'the neighbour stream finished');
  await waitFor('the server to see the reset', () => s.state.resets.length >= 1);
  t.same(s.state.resets, [NGHTTP2_CANCEL], 'server saw RST_STREAM CANCEL');
  t.same(await texts(gg.complete({ n: 1 })), ['t0'], 'session still usable');
  t.equal(s.state.sessions, 1, 'never reconnected');

  const pre = new AbortController();
  pre.abort();
  await t.rejects(texts(gg.complete({ n: 1 }, { signal: pre.signal })), { name: 'AbortError' }, 'already aborted: nothing sent');

  // leaving the loop early also cancels
  for await (const _ of gg.complete({ n: 50 })) break;
  await waitFor('the server to see the second reset', () => s.state.resets.length >= 2);
  t.same(s.state.resets, [NGHTTP2_CANCEL, NGHTTP2_CANCEL]);
});

t.test('refresh on a timer; retry once with a new token after TOKEN_EXPIRED', async (t) => {
  const s = await server(t, { refreshIn: 0.15 });
  const gg = new GhostgateClient({ url: s.url, credential: () => s.key });
  t.teardown(() => gg.close());
  const first = await gg.token();
  // The refresh is done when its token is the one in use (the exchange count alone moves first).
  await waitFor('a background refresh', async () => s.state.exchanges >= 2 && (await gg.token()) !== first);
  t.pass(`refreshed in the background (${s.state.exchanges} exchanges); a newer token is in use`);
  const before = s.state.exchanges;
  s.state.expireNext = true;
  t.same(await texts(gg.complete({ n: 1 })), ['t0'], 'retried transparently');
  t.ok(s.state.exchanges > before, 'after fetching a new token');
});

t.test('bad credential → coded error; the client does not keep the process alive', async (t) => {
  const s = await server(t);
  const gg = new GhostgateClient({ url: s.url, credential: 'ggk_wrong' });
  t.teardown(() => gg.close());
  const err = await texts(gg.complete({ n: 1 })).catch((e: unknown) => e);
  t.ok(err instanceof GhostgateError);
  t.match(err, { code: 'GW_ERR_AUTH_INVALID_CREDENTIAL', status: 401 });
});
