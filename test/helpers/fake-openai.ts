/**
 * A tiny OpenAI-like HTTP/1.1 upstream for passthrough tests, and a gateway in front of it.
 *
 *   const { g, up, token } = await passthroughRig(t);          // /v1/embeddings, /v1/moderations → up
 *   const h = await up.nextHeld(() => send('/v1/files/slow'));   // the upstream holds that request
 *   await up.nextGone(() => cancel());                           // ...and sees it abandoned
 *
 * It answers embeddings and moderations at once (`/v1/files/busy`: 503) and records what it got. Requests under
 * `/v1/files/slow` are held until the test answers them (`held[i].res`); the upstream counts
 * them while open (`inFlight()`) and tells when one is closed before it was answered (the
 * gateway gave up on it: `gone`, with the time it saw that).
 */
import { EventEmitter, once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Test } from 'tap';
import { startGateway } from './gateway.ts';
import type { TestGateway } from './gateway.ts';
import { within } from './h2.ts';

export interface Seen { method: string; url: string; headers: http.IncomingHttpHeaders; body: string; /** The body's bytes. */ raw: Buffer }

/** A held request: answer it with `res`; `gone` once its connection closed unanswered. */
export interface Held { res: http.ServerResponse; gone: boolean; /** performance.now() when it was seen gone. */ goneAt: number }

export interface FakeOpenAI {
  url: string;
  seen: Seen[];
  held: Held[];
  /** Held requests whose connection is still open (answered or not). */
  inFlight(): number;
  /** TCP connections open to it now. */
  connections(): Promise<number>;
  /** Run `act`, then wait (bounded) for the upstream to hold the next request. */
  nextHeld(act: () => unknown): Promise<Held>;
  /** Run `act`, then wait (bounded) for the upstream to see a held request closed unanswered. */
  nextGone(act: () => unknown): Promise<Held>;
  close(): Promise<void>;
}

/** What closes the fake: a tap Test, or a bench's list of teardowns. */
export interface Teardown { teardown(fn: () => unknown): void }

export async function fakeOpenAI(t: Teardown): Promise<FakeOpenAI> {
  const seen: Seen[] = [];
  const held: Held[] = [];
  const events = new EventEmitter();
  let inFlight = 0;
  const server = http.createServer((req, res) => {
    if (req.url?.startsWith('/v1/files/slow')) {
      const h: Held = { res, gone: false, goneAt: 0 };
      inFlight++;
      res.once('close', () => {
        inFlight--;
        if (res.writableFinished) return;
        h.gone = true;
        h.goneAt = performance.now();
        events.emit('gone', h);
      });
      req.resume();
      req.on('end', () => { held.push(h); events.emit('held', h); });
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => { chunks.push(d); });
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const body = raw.toString();
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body, raw });
      if (req.url === '/v1/files/busy') {
        res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '0' });
        res.end('{"error":{"message":"busy"}}');
        return;
      }
      const input = (() => { try { return (JSON.parse(body) as { input?: unknown }).input; } catch { return undefined; } })();
      const out = req.url === '/v1/embeddings'
        ? { object: 'list', model: 'text-embedding-3-small', data: [{ object: 'embedding', index: 0, embedding: [0.25, -0.5, String(input).length] }], usage: { prompt_tokens: 1, total_tokens: 1 } }
        : { id: 'modr-1', model: 'omni-moderation-latest', results: [{ flagged: false }] };
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'fake' });
      res.end(JSON.stringify(out));
    });
  });
  // Idle connections stay open a minute (undici keeps them as long as the server's Keep-Alive
  // hint says), so one still open after the gateway closed is the gateway's, not a timeout's.
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const close = (): Promise<void> => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); });
  t.teardown(close);
  const next = async (event: string, act: () => unknown, what: string): Promise<Held> => {
    const p = once(events, event);
    act();
    return ((await within(what, p)) as [Held])[0];
  };
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, held, close,
    inFlight: () => inFlight,
    connections: () => new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n)))),
    nextHeld: (act) => next('held', act, 'the upstream to get the request'),
    nextGone: (act) => next('gone', act, 'the upstream to see the request abandoned'),
  };
}

/**
 * A gateway (dev auth) whose `passthrough:` sends /v1/embeddings and /v1/moderations (and the
 * entries in `extra`, YAML list items) to a fresh fake upstream `openai` with its own key; and a
 * token for it.
 */
export async function passthroughRig(t: Test, extra = ''): Promise<{ g: TestGateway; up: FakeOpenAI; token: string }> {
  const up = await fakeOpenAI(t);
  const g = await startGateway(t, {
    env: { ...process.env, GG_TEST_OPENAI_KEY: 'sk-upstream-secret' },
    upstreamsYaml: (m) => [
      'upstreams:',
      `  local: { url: ${m.url}, protocol: h2c }`,
      `  openai: { url: ${up.url}, protocol: http1, credential: { secret: { env: GG_TEST_OPENAI_KEY } } }`,
      'models:',
      '  ghost-small: { upstream: local, aliases: [ghost] }',
      '  ghost-large: { upstream: local }',
    ].join('\n'),
    extraConfig: ['auth: { dev: true }', 'passthrough:', '  - { path: /v1/embeddings, upstream: openai }', '  - { path: /v1/moderations, upstream: openai }', extra].filter(Boolean).join('\n'),
  });
  const token = (await g.gw.runtime.auth!.mint({ sub: 'alice' })).token;
  return { g, up, token };
}
