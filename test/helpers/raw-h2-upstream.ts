/**
 * A fake HTTP/2 upstream that writes raw frames over node:net, for faults a real HTTP/2 server
 * will not produce on request: RST_STREAM(NO_ERROR) mid-response, GOAWAY then FIN mid-stream,
 * refused streams, a peer that never sends SETTINGS, a peer that stops answering PING.
 *
 *   const up = await startRawH2(t, { onRequest: (c, id) => { c.respond(id); c.data(id, 'data: a\n\n', true); } });
 *   // upstream url: up.url (h2c)
 *
 * Response headers are HPACK-encoded by hand (`:status` 200 from the static table plus a literal
 * content-type), so no decoder is needed: the fake never reads the request headers.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';

// One frame encoder for the raw-frame helpers: the client side (raw-h2.ts) owns it.
import { FRAME, frame } from './raw-h2.ts';
export { FRAME, frame };
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PREFACE_LEN = 24;

function u32(n: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0, 0); return b; }

/** `:status: 200` (static index 8) + `content-type: text/event-stream` (literal, indexed name 31). */
const SSE_200 = Buffer.concat([Buffer.from([0x88, 0x0f, 0x10, 17]), Buffer.from('text/event-stream')]);

/** One client connection (one gateway upstream session). */
export class RawH2Conn {
  readonly socket: net.Socket;
  /** performance.now() when the connection was accepted. */
  readonly at = performance.now();
  /** Request streams that arrived complete on this connection. */
  requests = 0;
  /** PINGs received (answered or not). */
  pings = 0;
  /** RST_STREAM frames the client sent: stream id and error code. */
  readonly resets: Array<{ id: number; code: number }> = [];
  constructor(socket: net.Socket) { this.socket = socket; }
  #write(b: Buffer): void { if (!this.socket.destroyed) this.socket.write(b); }
  /** Response HEADERS (200, text/event-stream). */
  respond(id: number, endStream = false): void { this.#write(frame(FRAME.HEADERS, END_HEADERS | (endStream ? END_STREAM : 0), id, SSE_200)); }
  data(id: number, text: string, endStream = false): void { this.#write(frame(FRAME.DATA, endStream ? END_STREAM : 0, id, Buffer.from(text))); }
  rst(id: number, code: number): void { this.#write(frame(FRAME.RST_STREAM, 0, id, u32(code))); }
  goaway(lastStreamId: number, code = 0): void { this.#write(frame(FRAME.GOAWAY, 0, 0, Buffer.concat([u32(lastStreamId), u32(code)]))); }
  /** A full, well-formed SSE completion ending with END_STREAM. */
  complete(id: number): void {
    this.respond(id);
    this.data(id, 'data: {"choices":[{"text":"a"}]}\n\n');
    this.data(id, 'data: [DONE]\n\n', true);
  }
}

export interface RawH2Options {
  /**
   * Send SETTINGS when a client connects (default true); false = accepts TCP and never speaks
   * HTTP/2 on that connection. A function is asked for each new connection.
   */
  settings?: boolean | (() => boolean);
  /** SETTINGS_MAX_CONCURRENT_STREAMS to advertise (default: none, i.e. unlimited). Advertised only: the fake does not enforce it. */
  maxConcurrentStreams?: number;
  /** Whether to ACK a PING (default: always). */
  answerPing?: (conn: RawH2Conn) => boolean;
  /** A request stream arrived complete; `nth` counts requests on this connection from 1. */
  onRequest?: (conn: RawH2Conn, streamId: number, nth: number) => void;
}

export interface RawH2Upstream {
  url: string;
  port: number;
  /** Connections accepted, in order. */
  conns: RawH2Conn[];
  close(): Promise<void>;
}

interface Teardown { teardown(fn: () => unknown): void }

export async function startRawH2(t: Teardown, o: RawH2Options = {}): Promise<RawH2Upstream> {
  const conns: RawH2Conn[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.setNoDelay(true);
    const c = new RawH2Conn(socket);
    conns.push(c);
    const speaks = typeof o.settings === 'function' ? o.settings() : o.settings !== false;
    if (speaks) {
      const payload = o.maxConcurrentStreams === undefined ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0, 3]), u32(o.maxConcurrentStreams)]);
      socket.write(frame(FRAME.SETTINGS, 0, 0, payload));
    }
    let buf = Buffer.alloc(0);
    let prefaceSeen = false;
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!prefaceSeen) {
        if (buf.length < PREFACE_LEN) return;
        buf = buf.subarray(PREFACE_LEN);
        prefaceSeen = true;
      }
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) return;
        const type = buf[3]!;
        const flags = buf[4]!;
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        const payload = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        if (!speaks) continue; // never speaks: reads and ignores everything
        switch (type) {
          case FRAME.SETTINGS:
            if ((flags & ACK) === 0) socket.write(frame(FRAME.SETTINGS, ACK, 0));
            break;
          case FRAME.PING:
            if ((flags & ACK) !== 0) break;
            c.pings++;
            if (o.answerPing === undefined || o.answerPing(c)) socket.write(frame(FRAME.PING, ACK, 0, Buffer.from(payload)));
            break;
          case FRAME.RST_STREAM:
            c.resets.push({ id, code: payload.readUInt32BE(0) });
            break;
          case FRAME.DATA:
            // Keep the connection window open for the request bodies.
            if (len > 0) socket.write(frame(FRAME.WINDOW_UPDATE, 0, 0, u32(len)));
            if (flags & END_STREAM) o.onRequest?.(c, id, ++c.requests);
            break;
          case FRAME.HEADERS:
            if (flags & END_STREAM) o.onRequest?.(c, id, ++c.requests);
            break;
          default:
            break;
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const close = (): Promise<void> => new Promise((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  });
  t.teardown(close);
  return { url: `http://127.0.0.1:${port}`, port, conns, close };
}

/** `upstreams:`/`models:` YAML pointing the model ghost-small at `url`. */
export function upstreamYaml(url: string, protocol: 'h2c' | 'http1', o: { pool?: string; timeouts?: string; extra?: string } = {}): string {
  return [
    'upstreams:',
    '  local:',
    `    url: ${url}`,
    `    protocol: ${protocol}`,
    `    pool: ${o.pool ?? '{ size: 2 }'}`,
    `    timeouts: ${o.timeouts ?? '{ connectMs: 1000, firstByteMs: 10000 }'}`,
    o.extra ?? '',
    'models:',
    '  ghost-small: { upstream: local }',
  ].filter((l) => l !== '').join('\n');
}
