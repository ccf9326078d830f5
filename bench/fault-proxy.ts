/**
 * A fault-injecting HTTP/2 (h2c) proxy for the soak: the gateway's upstream points at it, and it
 * forwards every stream to the real model server, until told to misbehave:
 *
 *   kill()          the upstream dies: stop listening, destroy every session, SIGKILL the model
 *                   server (the caller's `killModel`); `revive()` restarts both
 *   hang(ms)        stop relaying: in-flight streams get no more bytes, new streams no response;
 *                   after `ms` those streams are reset (INTERNAL_ERROR) and relaying resumes
 *   gracefulClose() what a draining upstream that cuts streams does: every in-flight stream ends
 *                   with RST_STREAM(NO_ERROR) before END_STREAM, then the session closes
 *   goaway()        GOAWAY(NO_ERROR, last stream id) on every session; in-flight streams finish
 *   reset()         in-flight streams reset with INTERNAL_ERROR, and the next new ones REFUSED
 *
 * Every request id (`x-request-id`) a fault touched is remembered in `hit`, so the soak can tell
 * failures a fault caused from the others.
 *
 * Outside a fault it is transparent: each gateway session gets its own session to the model server
 * (with the gateway's flow-control windows), so the model's per-session limits (128 streams, its
 * session memory) apply per gateway session as they would without the proxy; and a stream the model
 * refused unprocessed (REFUSED_STREAM, ENHANCE_YOUR_CALM) is refused to the gateway with that code,
 * not turned into an error, so the gateway may retry it. (Funnelling every gateway session into one
 * model session let the soak's `slow-reader` fill that one session's 128 streams and session memory,
 * and well-behaved requests then waited in the proxy or were refused: a proxy artefact.)
 */
import http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream, IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';

const { NGHTTP2_NO_ERROR, NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_REFUSED_STREAM, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te', 'http2-settings']);

interface Pair { id: string; down: ServerHttp2Stream; up: ClientHttp2Stream | null; hung: boolean }

/**
 * End `s` with RST_STREAM(code) and nothing else. `stream.close(code)` would first end the writable
 * side (an empty DATA frame with END_STREAM) when it is still open, and a client reads that as a
 * complete response; `destroy` skips the write (the stream is already destroyed when it runs).
 */
function rst(s: ServerHttp2Stream, code: number): void {
  if (s.destroyed) return;
  if (code === NGHTTP2_NO_ERROR) s.destroy();
  else s.destroy(Object.assign(new Error('injected fault'), { code: 'ERR_HTTP2_STREAM_ERROR' }));
}

export class FaultProxy {
  readonly server: http2.Http2Server;
  port = 0;
  /** Request ids a fault touched. */
  readonly hit = new Set<string>();
  /** Streams relayed / refused / reset by faults. */
  counts = { streams: 0, refused: 0, resetByFault: 0, cutNoError: 0, goaways: 0 };
  readonly #target: string;
  /** The model-server session of each gateway session. */
  readonly #ups = new Map<ServerHttp2Session, ClientHttp2Session>();
  readonly #pairs = new Set<Pair>();
  readonly #sessions = new Set<ServerHttp2Session>();
  readonly #sockets = new Set<Socket>();
  #mode: 'normal' | 'hang' | 'down' = 'normal';
  #refuseNext = 0;
  readonly #held = new Set<Pair>();
  /**
   * Per request id, when (epoch ms) it arrived here, when the model answered its
   * head, and how it ended here: the soak prints it for each failed well-behaved request, so a
   * failure says where the time went (before the proxy, in the model, or after it).
   */
  readonly trace = new Map<string, { at: number; modelHead: number; end: number; how: string; upSession: number; queuedBehind: number }>();
  #upSessions = 0;

  constructor(target: string) {
    this.#target = target;
    this.server = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
    this.server.on('session', (s) => {
      this.#sessions.add(s);
      s.on('error', () => { /* closes */ });
      s.once('close', () => {
        this.#sessions.delete(s);
        const u = this.#ups.get(s);
        this.#ups.delete(s);
        u?.close();
      });
    });
    this.server.on('stream', (down, headers) => this.#onStream(down, headers));
    this.server.on('connection', (sock: Socket) => { this.#sockets.add(sock); sock.once('close', () => this.#sockets.delete(sock)); });
  }

  /** Streams from the gateway open here now (relayed or held). */
  get openStreams(): number { return this.#pairs.size; }
  get sessions(): number { return this.#sessions.size; }

  listen(port = 0): Promise<void> {
    return new Promise((res, rej) => {
      this.server.once('error', rej);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', rej);
        this.port = (this.server.address() as AddressInfo).port;
        res();
      });
    });
  }

  #upstream(down: ServerHttp2Session): ClientHttp2Session {
    const u = this.#ups.get(down);
    if (u && !u.closed && !u.destroyed) return u;
    // The gateway's windows (core/upstream/h2-pool.ts): the proxy adds no flow-control bottleneck.
    const s = http2.connect(this.#target, { peerMaxConcurrentStreams: 1000, settings: { initialWindowSize: 1 << 20 } });
    s.once('connect', () => { s.setLocalWindowSize(8 << 20); });
    s.on('error', () => { /* streams fail */ });
    s.once('close', () => { if (this.#ups.get(down) === s) this.#ups.delete(down); });
    this.#ups.set(down, s);
    this.#upSessions++;
    return s;
  }

  #onStream(down: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    down.on('error', () => { /* reset */ });
    const id = String(headers['x-request-id'] ?? '');
    this.counts.streams++;
    const tr = { at: (performance.timeOrigin + performance.now()), modelHead: -1, end: -1, how: '', upSession: this.#upSessions, queuedBehind: this.#pairs.size };
    if (id) this.trace.set(id, tr);
    down.once('close', () => { tr.end = (performance.timeOrigin + performance.now()); tr.how ||= down.rstCode ? `rst ${down.rstCode}` : 'closed'; });
    if (this.#refuseNext > 0) {
      this.#refuseNext--;
      this.counts.refused++;
      this.hit.add(id);
      down.close(NGHTTP2_REFUSED_STREAM);
      return;
    }
    const pair: Pair = { id, down, up: null, hung: false };
    this.#pairs.add(pair);
    down.once('close', () => {
      this.#pairs.delete(pair);
      this.#held.delete(pair);
      if (pair.up && !pair.up.closed) pair.up.close(NGHTTP2_CANCEL);
    });
    if (this.#mode !== 'normal') { // hang: hold it without an answer
      this.hit.add(id);
      pair.hung = true;
      this.#held.add(pair);
      down.resume();
      return;
    }
    const out: http2.OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(headers)) if (!HOP.has(k) && k !== ':authority' && k !== ':scheme') out[k] = v;
    let up: ClientHttp2Stream;
    try { up = this.#upstream(down.session as ServerHttp2Session).request(out); } catch { this.hit.add(id); down.close(NGHTTP2_REFUSED_STREAM); return; }
    pair.up = up;
    up.on('error', () => { /* below */ });
    up.on('response', (h) => {
      tr.modelHead = (performance.timeOrigin + performance.now());
      if (down.closed || down.destroyed || pair.hung) return;
      const rh: http2.OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(h)) if (!HOP.has(k) && (k === ':status' || !k.startsWith(':'))) rh[k] = v;
      try { down.respond(rh); } catch { /* gone */ }
    });
    up.on('data', (c: Buffer) => {
      if (pair.hung || down.closed || down.destroyed) return;
      if (!down.write(c)) { up.pause(); down.once('drain', () => up.resume()); }
    });
    up.on('end', () => { if (!pair.hung && !down.closed && !down.destroyed) down.end(); });
    up.on('close', () => {
      if (pair.hung || down.closed || down.destroyed) return;
      // Reset by the model (or its session died): pass the failure on as an error.
      tr.how = `model rst ${up.rstCode}`;
      if (down.writableEnded) return;
      // Refused by the model before it processed it: say so (the gateway may retry it elsewhere).
      if (!down.headersSent && (up.rstCode === NGHTTP2_REFUSED_STREAM || up.rstCode === NGHTTP2_ENHANCE_YOUR_CALM)) { down.close(up.rstCode); return; }
      rst(down, NGHTTP2_INTERNAL_ERROR);
    });
    down.on('data', (c: Buffer) => { if (!up.write(c)) { down.pause(); up.once('drain', () => down.resume()); } });
    down.on('end', () => up.end());
  }

  #tagAll(): void { for (const p of this.#pairs) this.hit.add(p.id); }

  /** The upstream dies: stop listening, destroy sessions and streams. The caller kills the model server. */
  kill(): void {
    this.#mode = 'down';
    this.#tagAll();
    // Stop listening at once (not waiting for connections to end), then drop every connection.
    this.server.close();
    for (const s of this.#sessions) s.destroy();
    for (const s of this.#sockets) s.destroy();
    for (const u of this.#ups.values()) u.destroy();
    this.#ups.clear();
  }

  /** Listen again on the same port (the model server must be back). */
  async revive(): Promise<void> {
    for (let i = 0; ; i++) {
      try { await this.listen(this.port); break; } catch (e) { if (i > 50) throw e; await new Promise((r) => setTimeout(r, 100)); }
    }
    this.#mode = 'normal';
  }

  async hang(ms: number): Promise<void> {
    this.#mode = 'hang';
    for (const p of this.#pairs) { this.hit.add(p.id); p.hung = true; this.#held.add(p); }
    await new Promise((r) => setTimeout(r, ms));
    this.#mode = 'normal';
    for (const p of [...this.#held]) {
      this.counts.resetByFault++;
      rst(p.down, NGHTTP2_INTERNAL_ERROR);
      if (p.up && !p.up.closed) p.up.close(NGHTTP2_CANCEL);
    }
    this.#held.clear();
  }

  /** In-flight streams end with RST_STREAM(NO_ERROR) mid-response; then each session closes. */
  gracefulClose(): void {
    for (const p of [...this.#pairs]) {
      this.hit.add(p.id);
      this.counts.cutNoError++;
      rst(p.down, NGHTTP2_NO_ERROR);
      if (p.up && !p.up.closed) p.up.close(NGHTTP2_CANCEL);
    }
    for (const s of this.#sessions) s.close();
  }

  goaway(): void {
    this.#tagAll();
    for (const s of this.#sessions) {
      this.counts.goaways++;
      try { s.goaway(NGHTTP2_NO_ERROR); } catch { /* closed */ }
      s.close();
    }
  }

  reset(refuseNext = 3): void {
    for (const p of [...this.#pairs]) {
      this.hit.add(p.id);
      this.counts.resetByFault++;
      rst(p.down, NGHTTP2_INTERNAL_ERROR);
      if (p.up && !p.up.closed) p.up.close(NGHTTP2_CANCEL);
    }
    this.#refuseNext = refuseNext;
  }

  close(): void {
    this.server.close();
    for (const s of this.#sessions) s.destroy();
    for (const s of this.#sockets) s.destroy();
    for (const u of this.#ups.values()) u.destroy();
  }
}
