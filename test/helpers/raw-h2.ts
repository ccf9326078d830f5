/**
 * HTTP/2 frames written by hand, for attacks a real client library will not perform: HEADERS,
 * DATA and RST_STREAM in one TCP write, thousands of open+reset pairs as fast as the socket takes
 * them. HPACK is "literal header field without indexing, new name" for every field (RFC 7541
 * §6.2.2), which needs no table state.
 *
 *   const c = await rawConnect(g.url);
 *   c.socket.write(Buffer.concat([request(1, '/v1/completions', body), rst(1)]));
 */
import net from 'node:net';
import tls from 'node:tls';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1), first byte ORed with `mask`. */
function hpackInt(n: number, prefixBits: number, mask: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (n < max) return [mask | n];
  const out = [mask | max];
  n -= max;
  while (n >= 128) { out.push((n & 127) | 128); n >>= 7; }
  out.push(n);
  return out;
}

/** A header block: every field a literal without indexing with a literal name. */
export function headerBlock(fields: Array<[string, string]>): Buffer {
  const parts: number[] = [];
  for (const [name, value] of fields) {
    const n = Buffer.from(name);
    const v = Buffer.from(value);
    parts.push(0x00, ...hpackInt(n.length, 7, 0), ...n, ...hpackInt(v.length, 7, 0), ...v);
  }
  return Buffer.from(parts);
}

/** SETTINGS; `initialWindowSize` 0 makes a client that accepts no response DATA until it says so. */
export function settings(values: Record<number, number> = {}): Buffer {
  const entries = Object.entries(values);
  const p = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, v], i) => { p.writeUInt16BE(Number(id), i * 6); p.writeUInt32BE(v, i * 6 + 2); });
  return frame(FRAME.SETTINGS, 0, 0, p);
}

export function rst(streamId: number, code = 0x8 /* CANCEL */): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code, 0);
  return frame(FRAME.RST_STREAM, 0, streamId, p);
}

/** HEADERS (+ DATA with END_STREAM when there is a body) for a JSON POST. */
export function request(streamId: number, path: string, body: string, extra: Array<[string, string]> = [], contentLength = true): Buffer {
  const b = Buffer.from(body);
  const fields: Array<[string, string]> = [[':method', 'POST'], [':scheme', 'http'], [':path', path], [':authority', 'localhost'], ['content-type', 'application/json'], ...extra];
  if (contentLength) fields.push(['content-length', String(b.length)]);
  return Buffer.concat([
    frame(FRAME.HEADERS, FLAG.END_HEADERS, streamId, headerBlock(fields)),
    frame(FRAME.DATA, FLAG.END_STREAM, streamId, b),
  ]);
}

export interface RawFrame { type: number; flags: number; streamId: number; payload: Buffer }

export interface RawConnection {
  socket: net.Socket;
  /** Every frame the server sent, in order. */
  frames: RawFrame[];
  /** Resolves with the GOAWAY error code when one arrives. */
  goaway: Promise<number>;
  /** Resolves when the server closed the connection. */
  closed: Promise<void>;
}

/**
 * Open a TCP connection, send the preface and `initial` SETTINGS, and parse what comes back.
 * `localAddress` (e.g. '127.0.0.2', a loopback alias) makes it another client IP.
 */
export function rawConnect(url: string, initial: Buffer = settings(), localAddress?: string, secure?: { ca: string }): Promise<RawConnection> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    // TLS (h2 by ALPN) when `secure` gives the CA; cleartext (h2c prior knowledge) otherwise.
    const socket: net.Socket = secure
      ? tls.connect({ port: Number(u.port), host: u.hostname, ca: secure.ca, servername: 'localhost', ALPNProtocols: ['h2'] })
      : net.connect({ port: Number(u.port), host: u.hostname, localAddress });
    const frames: RawFrame[] = [];
    let buf: Buffer = Buffer.alloc(0);
    let onGoaway!: (code: number) => void;
    const goaway = new Promise<number>((r) => { onGoaway = r; });
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('error', () => { /* the server may cut us off; 'close' follows */ });
    socket.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const f: RawFrame = { type: buf[3]!, flags: buf[4]!, streamId: buf.readUInt32BE(5) & 0x7fffffff, payload: buf.subarray(9, 9 + len) };
        buf = buf.subarray(9 + len);
        frames.push(f);
        if (f.type === FRAME.SETTINGS && !(f.flags & FLAG.ACK)) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
        if (f.type === FRAME.GOAWAY) onGoaway(f.payload.readUInt32BE(4));
      }
    });
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      socket.setNoDelay(true);
      socket.write(Buffer.concat([PREFACE, initial]));
      resolve({ socket, frames, goaway, closed });
    });
    socket.once('error', reject);
  });
}
