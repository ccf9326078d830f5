/**
 * Reference client for ghostgate, for IDE-extension authors to copy. One file, node:http2 only.
 *
 * - Holds ONE long-lived HTTP/2 session to the gateway (reconnects lazily if it goes away).
 * - Exchanges a long-lived credential (API key or IdP token) for a short-lived token at
 *   POST /v1/token, and refreshes it `refresh_in` seconds later with an unref'd timer, so a
 *   request never waits for a token except the very first one.
 * - `complete(body, {signal})` streams the SSE events of one completion as an async iterator.
 *   Aborting the signal (the user typed another key) resets only that stream with CANCEL; the
 *   session and the other streams on it stay up.
 *
 * @example
 *   const gg = new GhostgateClient({ url: 'http://127.0.0.1:8080', credential: process.env.GHOSTGATE_KEY! });
 *   const ac = new AbortController();
 *   for await (const ev of gg.complete({ model: 'ghost-small', prompt: 'def fib(' }, { signal: ac.signal })) {
 *     process.stdout.write((ev as { choices: Array<{ text: string }> }).choices[0].text);
 *   }
 *   gg.close();
 */
import http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream, IncomingHttpHeaders, SecureClientSessionOptions } from 'node:http2';

const { NGHTTP2_CANCEL } = http2.constants;

export interface GhostgateClientOptions {
  /** Gateway base URL: `http://host:port` (h2c, prior knowledge) or `https://host:port` (h2 over TLS). */
  url: string;
  /** The long-lived credential, or a function returning it (called at each refresh, e.g. to renew an OAuth token). */
  credential: string | (() => string | Promise<string>);
  /** Default `/v1/token`. */
  tokenPath?: string;
  /** Default `/v1/completions`. */
  completionsPath?: string;
  /** Sent with every completion (e.g. `editor-version: vscode/1.95.0`, `editor-plugin-version: ghost/1.2.0`). */
  headers?: Record<string, string>;
  /** TLS and session options for `http2.connect` (e.g. `ca`, `servername`). */
  connect?: SecureClientSessionOptions;
  /** Wait after a failed background refresh before trying again (ms). Default 10 000. */
  retryDelayMs?: number;
  /** A background refresh failed (the current token is used until it expires). */
  onRefreshError?: (err: Error) => void;
}

/** A coded error from the gateway (`{error: {code, message}}`), or a transport failure (status 0). */
export class GhostgateError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(code: string, message: string, status: number) {
    super(message);
    this.name = 'GhostgateError';
    this.code = code;
    this.status = status;
  }
}

interface Token { value: string; expiresAtMs: number }

/** Errors after which a fresh token may help (expired, or the gateway rotated its keys). */
const RETRY_WITH_NEW_TOKEN = new Set(['GW_ERR_AUTH_TOKEN_EXPIRED', 'GW_ERR_AUTH_UNKNOWN_KEY', 'GW_ERR_AUTH_INVALID_SIGNATURE']);

function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new DOMException('The operation was aborted', 'AbortError');
}

export class GhostgateClient {
  readonly #o: Required<Omit<GhostgateClientOptions, 'connect' | 'onRefreshError'>> & Pick<GhostgateClientOptions, 'connect' | 'onRefreshError'>;
  #session: ClientHttp2Session | undefined;
  #token: Token | undefined;
  #fetching: Promise<string> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(opts: GhostgateClientOptions) {
    this.#o = { tokenPath: '/v1/token', completionsPath: '/v1/completions', headers: {}, retryDelayMs: 10_000, ...opts };
  }

  /** The HTTP/2 session, connecting (again) if there is none or it went away. */
  session(): ClientHttp2Session {
    if (this.#closed) throw new GhostgateError('CLIENT_CLOSED', 'client is closed', 0);
    const s = this.#session;
    if (s && !s.closed && !s.destroyed) return s;
    const session = http2.connect(this.#o.url, this.#o.connect);
    const drop = () => { if (this.#session === session) this.#session = undefined; };
    session.on('error', drop); // failures surface on the streams; never crash the editor
    session.on('goaway', drop);
    session.on('close', drop);
    this.#session = session;
    return session;
  }

  /** A valid token: the current one, or a new one from the gateway. */
  token(): Promise<string> {
    const t = this.#token;
    if (t && Date.now() < t.expiresAtMs - 5_000) return Promise.resolve(t.value);
    return this.refresh();
  }

  /** Exchange the credential for a new token now (concurrent callers share one request). */
  refresh(): Promise<string> {
    this.#fetching ??= this.#fetchToken().finally(() => { this.#fetching = undefined; });
    return this.#fetching;
  }

  async #fetchToken(): Promise<string> {
    const c = this.#o.credential;
    const credential = typeof c === 'string' ? c : await c();
    const { status, body } = await this.#json(this.#o.tokenPath, { authorization: `Bearer ${credential}` }, {});
    if (status !== 200) throw toError(status, body);
    const r = body as { token: string; expires_at: number; refresh_in: number };
    this.#token = { value: r.token, expiresAtMs: r.expires_at * 1000 };
    this.#schedule(r.refresh_in * 1000);
    return r.token;
  }

  #schedule(ms: number): void {
    clearTimeout(this.#timer);
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.refresh().catch((err: Error) => {
        this.#o.onRefreshError?.(err);
        const left = (this.#token?.expiresAtMs ?? 0) - Date.now();
        if (left > 0) this.#schedule(Math.min(this.#o.retryDelayMs, left / 2));
      });
    }, Math.max(0, ms));
    this.#timer.unref(); // never keeps the editor's process alive
  }

  /**
   * Stream one completion: yields each SSE `data:` payload parsed as JSON, ends at `[DONE]`.
   * Aborting `signal` (or leaving the loop early) resets this stream only (RST_STREAM CANCEL).
   * Throws GhostgateError for a gateway error; the signal's reason when aborted.
   */
  async *complete<T = unknown>(body: Record<string, unknown>, opts: { signal?: AbortSignal } = {}): AsyncGenerator<T, void, undefined> {
    const { signal } = opts;
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) throw abortError(signal);
      const token = await this.token();
      if (signal?.aborted) throw abortError(signal);
      const stream = this.session().request({
        ':method': 'POST', ':path': this.#o.completionsPath,
        'content-type': 'application/json', accept: 'text/event-stream',
        ...this.#o.headers, authorization: `Bearer ${token}`,
      });
      const cancel = () => { if (!stream.closed) stream.close(NGHTTP2_CANCEL); };
      signal?.addEventListener('abort', cancel, { once: true });
      try {
        stream.end(JSON.stringify({ stream: true, ...body }));
        const headers = await responseHeaders(stream);
        const status = Number(headers[':status']);
        if (status !== 200) {
          const err = toError(status, await readJson(stream));
          if (status === 401 && attempt === 0 && RETRY_WITH_NEW_TOKEN.has(err.code)) {
            this.#token = undefined;
            continue;
          }
          throw err;
        }
        // Nothing is yielded once the signal fired (a chunk may carry several events).
        for await (const ev of sseEvents<T>(stream)) {
          if (signal?.aborted) throw abortError(signal);
          yield ev;
        }
        if (signal?.aborted) throw abortError(signal);
        return;
      } catch (e) {
        if (signal?.aborted) throw abortError(signal);
        if (e instanceof GhostgateError) throw e;
        throw new GhostgateError('STREAM_ERROR', (e as Error).message, 0); // e.g. reset mid-response
      } finally {
        signal?.removeEventListener('abort', cancel);
        cancel(); // no-op after a normal end; CANCEL if the consumer stopped early
      }
    }
  }

  /** Stop refreshing and close the session. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#session?.close();
    this.#session = undefined;
  }

  async #json(path: string, headers: Record<string, string>, body: unknown): Promise<{ status: number; body: unknown }> {
    const stream = this.session().request({ ':method': 'POST', ':path': path, 'content-type': 'application/json', ...headers });
    stream.end(JSON.stringify(body));
    const h = await responseHeaders(stream);
    return { status: Number(h[':status']), body: await readJson(stream) };
  }
}

function responseHeaders(stream: ClientHttp2Stream): Promise<IncomingHttpHeaders> {
  return new Promise((resolve, reject) => {
    const onClose = () => reject(new GhostgateError('STREAM_CLOSED', `stream closed before a response (code ${stream.rstCode})`, 0));
    stream.once('response', (h) => { stream.off('close', onClose); resolve(h); });
    stream.once('error', (e: Error) => reject(new GhostgateError('STREAM_ERROR', e.message, 0)));
    stream.once('close', onClose);
  });
}

async function readJson(stream: ClientHttp2Stream): Promise<unknown> {
  let text = '';
  stream.setEncoding('utf8');
  for await (const chunk of stream) text += chunk as string;
  try { return JSON.parse(text); } catch { return { error: { code: 'BAD_RESPONSE', message: text.slice(0, 200) } }; }
}

function toError(status: number, body: unknown): GhostgateError {
  const e = (body as { error?: { code?: string; message?: string } } | null)?.error;
  return new GhostgateError(e?.code ?? `HTTP_${status}`, e?.message ?? `HTTP ${status}`, status);
}

/** Parse an SSE byte stream into `data:` payloads; `[DONE]` ends it; an `event: error` throws. */
async function* sseEvents<T>(stream: ClientHttp2Stream): AsyncGenerator<T, void, undefined> {
  stream.setEncoding('utf8');
  let buf = '';
  for await (const chunk of stream) {
    buf += chunk as string;
    let end: number;
    while ((end = buf.search(/\r?\n\r?\n/)) !== -1) {
      const raw = buf.slice(0, end);
      buf = buf.slice(end + (buf[end] === '\r' ? 4 : 2));
      let event = 'message';
      const data: string[] = [];
      for (const line of raw.split(/\r?\n/)) {
        if (line.startsWith('data:')) data.push(line.slice(line[5] === ' ' ? 6 : 5));
        else if (line.startsWith('event:')) event = line.slice(6).trim();
      }
      if (data.length === 0) continue;
      const payload = data.join('\n');
      if (payload === '[DONE]') return;
      const parsed: unknown = JSON.parse(payload);
      if (event === 'error') throw toError(0, parsed);
      yield parsed as T;
    }
  }
}
