/** Real HTTP/2 and HTTP/1.1 clients for tests. */
import http from 'node:http';
import http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream, IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';

export interface Response { status: number; headers: IncomingHttpHeaders; text: string; events: string[]; rstCode?: number; error?: string; complete: boolean }

/** SSE `data:` payloads in a body. */
export function sseData(text: string): string[] {
  return text.split('\n\n').map((e) => e.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n')).filter((d) => d !== '');
}

/** Client sessions `connect` opened that are not closed yet, with the port each went to. */
const clientSessions = new Map<ClientHttp2Session, number>();

export function connect(url: string, opts: http2.SecureClientSessionOptions = {}): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(url, opts);
    const u = new URL(url);
    clientSessions.set(s, Number(u.port || (u.protocol === 'https:' ? 443 : 80)));
    s.once('close', () => clientSessions.delete(s));
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/**
 * Destroy the client sessions still open to any of `ports`. For teardowns: a test that failed
 * half-way can leave a stream it never read; a graceful `session.close()` waits for that stream
 * forever, and so does a gateway closing under it. Returns how many were still open.
 */
export function destroyClientSessions(ports: ReadonlyArray<number | undefined>): number {
  let n = 0;
  for (const [s, port] of clientSessions) {
    if (!ports.includes(port)) continue;
    s.destroy();
    clientSessions.delete(s);
    n++;
  }
  return n;
}

/** Open a POST stream with a JSON body (a string or Buffer is sent as it is); returns the stream (for cancel tests). */
export function open(session: ClientHttp2Session, path: string, body: unknown, headers: OutgoingHttpHeaders = {}): ClientHttp2Stream {
  const payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const st = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/json', ...headers });
  st.end(payload);
  return st;
}

/** Read a stream to its end (or its reset). */
export function collect(st: ClientHttp2Stream): Promise<Response> {
  return new Promise((resolve) => {
    let status = 0; let headers: IncomingHttpHeaders = {}; let text = ''; let error: string | undefined; let ended = false;
    st.on('response', (h) => { headers = h; status = Number(h[':status']); });
    st.setEncoding('utf8');
    st.on('data', (d: string) => { text += d; });
    st.on('end', () => { ended = true; });
    st.on('error', (e: Error) => { error = e.message; });
    st.on('close', () => resolve({ status, headers, text, events: sseData(text), rstCode: st.rstCode, error, complete: ended && st.rstCode === http2.constants.NGHTTP2_NO_ERROR }));
  });
}

/** Resolves on the stream's first body chunk (the request is in flight at the upstream), or its end. */
export function firstData(st: ClientHttp2Stream): Promise<void> {
  return new Promise((resolve) => { st.once('data', () => resolve()); st.once('close', () => resolve()); });
}

export function post(session: ClientHttp2Session, path: string, body: unknown, headers: OutgoingHttpHeaders = {}): Promise<Response> {
  return collect(open(session, path, body, headers));
}

/** HTTP/1.1 POST with a keep-alive agent; `complete` is false if the body was cut. */
export function post1(url: string, body: unknown, headers: Record<string, string> = {}, agent?: http.Agent): Promise<Response> {
  const payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  return new Promise((resolve) => {
    const req = http.request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text, events: sseData(text), complete: res.complete }));
      res.on('error', (e) => resolve({ status: res.statusCode!, headers: res.headers, text, events: sseData(text), error: e.message, complete: false }));
    });
    req.on('error', (e) => resolve({ status: 0, headers: {}, text: '', events: [], error: e.message, complete: false }));
    req.end(payload);
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * How long a process the tests start (a gateway, its cluster workers, a model server) may take to
 * be up before it counts as hung. Starting is CPU work (Node loads and compiles the TypeScript):
 * on the 2-core machine at load 15-20 a gateway that starts in 2 s when quiet took over 30 s. A
 * bound against hangs only, never a measure; tap's per-file timeout (300 s) stays the last resort.
 */
export const START_MS = 120_000;

/**
 * Poll `fn` until it returns truthy. The deadline only turns a hang into a failure: it is generous
 * (a busy 2-core machine can stall a process for seconds), never a measure of speed.
 */
export async function until<T>(fn: () => T | Promise<T>, timeoutMs = 15_000, stepMs = 10): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(stepMs);
  }
}

/** `p`, or a rejection naming `what` after `ms` (a generous bound against hangs, as for `until`). */
export function within<T>(what: string, p: Promise<T>, ms = 15_000): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out waiting for ${what}`)), ms); })])
    .finally(() => clearTimeout(timer));
}

/** Poll `cond` until true; the error names `what` (a generous bound against hangs, as for `until`). */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = performance.now() + ms;
  while (!(await cond())) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
