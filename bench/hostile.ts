/**
 * The soak's hostile client (bench/soak.ts starts it as a child process, so its load does not
 * share an event loop with the well-behaved users). It rotates through attacks against one
 * gateway, each for `slotSeconds`, closing everything an attack opened before the next starts:
 *
 *   slow-reader   HTTP/2 with a receive window of 0: many streams of long completions never read
 *   rapid-reset   HTTP/2 request + RST_STREAM(CANCEL) at once, as fast as it goes, on one session
 *   trickle       HTTP/1.1 request heads sent 1 byte at a time, on many sockets
 *   no-body       HTTP/1.1 content-length with no body; HTTP/2 HEADERS without END_STREAM, no DATA
 *   one-write     raw HTTP/2: HEADERS + DATA + RST_STREAM(CANCEL) in one TCP write, many times
 *   deep-json     1 MB bodies nested ~500,000 levels deep
 *   idle-conns    many connections that send a preface (or nothing) and then stay idle
 *   open-bodies   request bodies that never end: HTTP/2 streams and HTTP/1.1 sockets that send part
 *                 of a 1 MB body and then nothing (the body budget, core/server/body-budget.ts)
 *   calm          HTTP/2 with a receive window of 0: 128 streams of 20,000-token completions, so the
 *                 upstream queues responses past its session memory and refuses new streams with
 *                 ENHANCE_YOUR_CALM (the pool retires such sessions, core/upstream/h2-pool.ts)
 *   odd-heads     requests refused before any route, as fast as they are answered: HTTP/2 streams
 *                 with 300 header fields (431) or `expect: bogus` (417), HTTP/1.1 `Expect: bogus`
 *                 pipelined on keep-alive sockets (417)
 *
 * Started with an IPC channel: parent → {cmd: 'start', url, port, token, seconds, slotSeconds};
 * child → {done: true, stats} when the time is up (or on {cmd: 'stop'}).
 */
import http2 from 'node:http2';
import type { ClientHttp2Session } from 'node:http2';
import net from 'node:net';

const { NGHTTP2_CANCEL } = http2.constants;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface HostileStats {
  /** Per attack: times run, requests/streams/connections it opened, answers by status. */
  attacks: Record<string, { runs: number; opened: number; answers: Record<string, number>; note: string }>;
  /** Request ids sent by the one-write attack (prefix): the parent asks the model server which arrived. */
  oneWritePrefix: string;
  oneWriteSent: number;
}

export interface Start { cmd: 'start'; url: string; port: number; token: string; seconds: number; slotSeconds: number }

const stats: HostileStats = { attacks: {}, oneWritePrefix: 'hx-', oneWriteSent: 0 };
let stopping = false;

function rec(name: string): HostileStats['attacks'][string] {
  return (stats.attacks[name] ??= { runs: 0, opened: 0, answers: {}, note: '' });
}
const bump = (m: Record<string, number>, k: string): void => { m[k] = (m[k] ?? 0) + 1; };

const longBody = JSON.stringify({ model: 'ghost-small', prompt: 'def slow(', stream: true, max_tokens: 400 });

/** Track sockets/sessions an attack opens, to close them all at its end. */
export class Bag {
  sessions = new Set<ClientHttp2Session>();
  sockets = new Set<net.Socket>();
  timers = new Set<NodeJS.Timeout>();
  close(): void {
    for (const t of this.timers) clearInterval(t);
    for (const s of this.sessions) s.destroy();
    for (const s of this.sockets) s.destroy();
  }
}

/** The attacker is another client than the typing users: per-IP connection caps apply to it alone. */
const HOSTILE_ADDRESS = '127.0.0.2';

function connectH2(url: string, bag: Bag, settings: http2.Settings = {}): ClientHttp2Session {
  const u = new URL(url);
  const s = http2.connect(url, { settings, peerMaxConcurrentStreams: 10_000, createConnection: () => net.connect({ port: Number(u.port), host: u.hostname, localAddress: HOSTILE_ADDRESS }) });
  s.on('error', () => { /* expected: the gateway may cut us off */ });
  bag.sessions.add(s);
  return s;
}

function rawSocket(port: number, bag: Bag): net.Socket {
  const s = net.connect({ port, host: '127.0.0.1', localAddress: HOSTILE_ADDRESS });
  s.on('error', () => { /* expected */ });
  bag.sockets.add(s);
  return s;
}

async function slowReader(a: Start, until: number, bag: Bag): Promise<void> {
  const r = rec('slow-reader');
  r.note = 'HTTP/2 window 0, 200 streams of 400-token completions never read';
  for (let k = 0; k < 2 && Date.now() < until; k++) {
    const s = connectH2(a.url, bag, { initialWindowSize: 0 });
    for (let i = 0; i < 100; i++) {
      let st: http2.ClientHttp2Stream;
      try {
        st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', authorization: `Bearer ${a.token}`, 'x-tokens': '400', 'x-token-ms': '5' });
      } catch { break; }
      r.opened++;
      st.on('response', (h) => bump(r.answers, String(h[':status'])));
      st.on('error', () => bump(r.answers, 'reset'));
      st.pause(); // never read
      st.end(longBody);
    }
  }
  await sleep(Math.max(0, until - Date.now()));
}

async function rapidReset(a: Start, until: number, bag: Bag): Promise<void> {
  const r = rec('rapid-reset');
  r.note = 'HTTP/2 request + RST_STREAM(CANCEL) at once, one session (reconnects if cut off)';
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'x', stream: true, max_tokens: 4 });
  let s = connectH2(a.url, bag);
  let sessions = 1;
  while (Date.now() < until && !stopping) {
    if (s.closed || s.destroyed) { bump(r.answers, 'session cut off'); s = connectH2(a.url, bag); sessions++; }
    for (let i = 0; i < 50; i++) {
      try {
        const st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', authorization: `Bearer ${a.token}` });
        st.on('error', () => { /* reset */ });
        st.end(body);
        st.close(NGHTTP2_CANCEL);
        r.opened++;
      } catch { break; }
    }
    await sleep(10);
  }
  r.note += `; ${sessions} session(s)`;
}

async function trickle(a: Start, until: number, bag: Bag): Promise<void> {
  const r = rec('trickle');
  r.note = 'HTTP/1.1 head 1 byte per 200 ms on 20 sockets';
  const head = Buffer.from(`POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nauthorization: Bearer ${a.token}\r\nx-padding: ${'p'.repeat(200)}\r\ncontent-length: 2\r\n\r\n{}`);
  for (let i = 0; i < 20; i++) {
    const s = rawSocket(a.port, bag);
    r.opened++;
    let at = 0;
    s.on('data', (d) => { const m = /^HTTP\/1\.1 (\d{3})/.exec(d.toString('latin1')); if (m) bump(r.answers, m[1]!); });
    s.on('close', () => bump(r.answers, at < head.length ? 'closed by gateway' : 'closed'));
    const t = setInterval(() => { if (at < head.length && !s.destroyed) s.write(head.subarray(at, ++at)); }, 200);
    bag.timers.add(t);
  }
  await sleep(Math.max(0, until - Date.now()));
}

async function noBody(a: Start, until: number, bag: Bag): Promise<void> {
  const r = rec('no-body');
  r.note = 'HTTP/1.1 content-length 1000 and no body on 20 sockets; HTTP/2 100 streams of HEADERS without END_STREAM';
  for (let i = 0; i < 20; i++) {
    const s = rawSocket(a.port, bag);
    r.opened++;
    s.on('data', (d) => { const m = /^HTTP\/1\.1 (\d{3})/.exec(d.toString('latin1')); if (m) bump(r.answers, `h1 ${m[1]}`); });
    s.on('close', () => bump(r.answers, 'h1 closed'));
    s.write(`POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nauthorization: Bearer ${a.token}\r\ncontent-length: 1000\r\n\r\n`);
  }
  const s = connectH2(a.url, bag);
  for (let i = 0; i < 100; i++) {
    try {
      const st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', authorization: `Bearer ${a.token}` }, { endStream: false });
      r.opened++;
      st.on('response', (h) => bump(r.answers, `h2 ${h[':status']}`));
      st.on('error', () => bump(r.answers, 'h2 reset'));
      st.on('close', () => { if (st.rstCode) bump(r.answers, `h2 rst ${st.rstCode}`); });
    } catch { break; }
  }
  await sleep(Math.max(0, until - Date.now()));
}

// --- raw HTTP/2 frames (for the one-write attack)

function hpackInt(value: number, prefixBits: number, first: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  let v = value - max;
  while (v >= 128) { out.push((v % 128) + 128); v = Math.floor(v / 128); }
  out.push(v);
  return out;
}
/** Literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2). */
function hpackLiteral(name: string, value: string): Buffer {
  const n = Buffer.from(name);
  const v = Buffer.from(value);
  return Buffer.concat([Buffer.from([0x00]), Buffer.from(hpackInt(n.length, 7, 0)), n, Buffer.from(hpackInt(v.length, 7, 0)), v]);
}
function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId, 5);
  return Buffer.concat([h, payload]);
}
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

async function oneWrite(a: Start, until: number, bag: Bag): Promise<void> {
  const r = rec('one-write');
  r.note = 'raw HTTP/2: HEADERS + DATA + RST_STREAM(CANCEL) in one write; 20 per 50 ms';
  let s = rawSocket(a.port, bag);
  let id = 1;
  const open = (): void => {
    s.write(Buffer.concat([PREFACE, frame(0x4, 0, 0, Buffer.alloc(0))]));
    id = 1;
  };
  // ACK the server's SETTINGS (any SETTINGS frame without the ACK flag) so the session stays healthy.
  let buf = Buffer.alloc(0);
  const onData = (d: Buffer): void => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      const type = buf[3]!;
      const flags = buf[4]!;
      if (type === 0x4 && (flags & 0x1) === 0) s.write(frame(0x4, 0x1, 0, Buffer.alloc(0)));
      if (type === 0x7) bump(r.answers, 'goaway');
      buf = buf.subarray(9 + len);
    }
  };
  s.on('data', onData);
  open();
  const body = Buffer.from(JSON.stringify({ model: 'ghost-small', prompt: 'def one_write(', stream: true, max_tokens: 4 }));
  const rst = Buffer.alloc(4); rst.writeUInt32BE(NGHTTP2_CANCEL, 0);
  while (Date.now() < until && !stopping) {
    if (s.destroyed) {
      bump(r.answers, 'socket closed');
      s = rawSocket(a.port, bag); buf = Buffer.alloc(0); s.on('data', onData); open();
    }
    const frames: Buffer[] = [];
    for (let i = 0; i < 20 && id < 2 ** 30; i++, id += 2) {
      const rid = `${stats.oneWritePrefix}${stats.oneWriteSent++}`;
      const block = Buffer.concat([
        hpackLiteral(':method', 'POST'), hpackLiteral(':scheme', 'http'), hpackLiteral(':path', '/v1/completions'), hpackLiteral(':authority', `127.0.0.1:${a.port}`),
        hpackLiteral('content-type', 'application/json'), hpackLiteral('authorization', `Bearer ${a.token}`), hpackLiteral('x-request-id', rid),
        hpackLiteral('content-length', String(body.length)),
      ]);
      // One write per request: HEADERS (END_HEADERS), DATA (END_STREAM), RST_STREAM(CANCEL).
      s.write(Buffer.concat([frame(0x1, 0x4, id, block), frame(0x0, 0x1, id, body), frame(0x3, 0, id, rst)]));
      r.opened++;
    }
    await sleep(50);
  }
}

async function deepJson(a: Start, until: number, bag: Bag): Promise<void> {
  const r = rec('deep-json');
  r.note = '1 MB bodies nested ~500,000 deep, 4 at a time';
  const n = 499_000;
  const body = Buffer.from(`{"model":"ghost-small","prompt":"x","extra":${'['.repeat(n)}${']'.repeat(n)}}`);
  const s = connectH2(a.url, bag);
  const one = (): Promise<void> => new Promise((res) => {
    let st: http2.ClientHttp2Stream;
    try { st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', authorization: `Bearer ${a.token}` }); } catch { res(); return; }
    r.opened++;
    st.on('response', (h) => bump(r.answers, String(h[':status'])));
    st.on('error', () => bump(r.answers, 'reset'));
    st.resume();
    st.on('close', () => res());
    st.end(body);
  });
  while (Date.now() < until && !stopping && !s.destroyed) await Promise.all([one(), one(), one(), one()]);
}

async function idleConns(a: Start, until: number, bag: Bag): Promise<void> {
  const r = rec('idle-conns');
  r.note = '400 connections: half send the h2 preface + SETTINGS, half nothing; then idle';
  for (let i = 0; i < 400; i++) {
    const s = rawSocket(a.port, bag);
    r.opened++;
    if (i % 2 === 0) s.write(Buffer.concat([PREFACE, frame(0x4, 0, 0, Buffer.alloc(0))]));
    s.on('close', () => bump(r.answers, 'closed by gateway'));
    if (i % 50 === 49) await sleep(5);
  }
  await sleep(Math.max(0, until - Date.now()));
}

async function openBodies(a: Start, until: number, bag: Bag): Promise<void> {
  const r = rec('open-bodies');
  r.note = 'bodies declared 1,000,000 B, 256 KB sent, never ended: HTTP/2 2 connections x 100 streams, HTTP/1.1 20 sockets';
  const head = Buffer.from('{"model":"ghost-small","prompt":"');
  const part = Buffer.alloc(256 * 1024, 0x61);
  for (let k = 0; k < 2 && Date.now() < until; k++) {
    const s = connectH2(a.url, bag);
    for (let i = 0; i < 100; i++) {
      let st: http2.ClientHttp2Stream;
      try {
        st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', 'content-length': '1000000', authorization: `Bearer ${a.token}` }, { endStream: false });
      } catch { break; }
      r.opened++;
      st.on('response', (h) => bump(r.answers, `h2 ${h[':status']}`));
      st.on('error', () => bump(r.answers, 'h2 reset'));
      st.resume();
      st.write(head);
      st.write(part);
    }
  }
  for (let i = 0; i < 20; i++) {
    const s = rawSocket(a.port, bag);
    r.opened++;
    s.on('data', (d) => { const m = /^HTTP\/1\.1 (\d{3})/.exec(d.toString('latin1')); if (m) bump(r.answers, `h1 ${m[1]}`); });
    s.write(`POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nauthorization: Bearer ${a.token}\r\ncontent-length: 1000000\r\n\r\n`);
    s.write(head);
    s.write(part);
  }
  await sleep(Math.max(0, until - Date.now()));
}

async function calm(a: Start, until: number, bag: Bag): Promise<void> {
  const r = rec('calm');
  r.note = 'HTTP/2 window 0, 128 streams of 20,000-token completions never read (about 2 MB each, queued by the upstream)';
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'never read', stream: true });
  const s = connectH2(a.url, bag, { initialWindowSize: 0 });
  for (let i = 0; i < 128; i++) {
    let st: http2.ClientHttp2Stream;
    try {
      st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', authorization: `Bearer ${a.token}`, 'x-tokens': '20000', 'x-token-ms': '0' });
    } catch { break; }
    r.opened++;
    st.on('response', (h) => bump(r.answers, String(h[':status'])));
    st.on('error', () => bump(r.answers, 'reset'));
    st.pause(); // never read
    st.end(body);
  }
  await sleep(Math.max(0, until - Date.now()));
}

async function oddHeads(a: Start, until: number, bag: Bag): Promise<void> {
  const r = rec('odd-heads');
  r.note = 'HTTP/2: 20 streams per 10 ms with 300 header fields or expect: bogus; HTTP/1.1: 10 Expect: bogus requests per 10 ms pipelined on one socket';
  const many = Object.fromEntries(Array.from({ length: 296 }, (_, i) => [`x-h${i}`, 'v']));
  const h1 = Buffer.from(`POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nexpect: bogus\r\nauthorization: Bearer ${a.token}\r\ncontent-length: 2\r\n\r\n{}`.repeat(10));
  let s = connectH2(a.url, bag);
  let sock = rawSocket(a.port, bag);
  const onH1 = (d: Buffer): void => { for (const m of d.toString('latin1').matchAll(/HTTP\/1\.1 (\d{3})/g)) bump(r.answers, `h1 ${m[1]}`); };
  sock.on('data', onH1);
  while (Date.now() < until && !stopping) {
    if (s.closed || s.destroyed) { bump(r.answers, 'h2 session closed'); s = connectH2(a.url, bag); }
    if (sock.destroyed) { bump(r.answers, 'h1 socket closed'); sock = rawSocket(a.port, bag); sock.on('data', onH1); }
    for (let i = 0; i < 20; i++) {
      const odd = i % 2 === 0 ? many : { expect: 'bogus' };
      try {
        const st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', authorization: `Bearer ${a.token}`, ...odd });
        r.opened++;
        st.on('response', (h) => bump(r.answers, `h2 ${h[':status']}`));
        st.on('error', () => bump(r.answers, 'h2 reset'));
        st.resume();
        st.end('{}');
      } catch { break; }
    }
    sock.write(h1);
    r.opened += 10;
    await sleep(10);
  }
}

export const ATTACKS: Array<[string, (a: Start, until: number, bag: Bag) => Promise<void>]> = [
  ['slow-reader', slowReader], ['rapid-reset', rapidReset], ['trickle', trickle], ['no-body', noBody],
  ['one-write', oneWrite], ['deep-json', deepJson], ['idle-conns', idleConns], ['open-bodies', openBodies], ['calm', calm],
  ['odd-heads', oddHeads],
];

async function run(a: Start): Promise<void> {
  const end = Date.now() + a.seconds * 1000;
  for (let k = 0; Date.now() < end && !stopping; k++) {
    const [name, fn] = ATTACKS[k % ATTACKS.length]!;
    const until = Math.min(end, Date.now() + a.slotSeconds * 1000);
    rec(name).runs++;
    process.send?.({ attack: name, at: Date.now() });
    const bag = new Bag();
    try { await fn(a, until, bag); } catch (e) { rec(name).note += ` (error: ${(e as Error).message})`; }
    bag.close();
    await sleep(200);
  }
  process.send?.({ done: true, stats });
}

if (import.meta.main) {
  if (!process.send) { process.stderr.write('bench/hostile.ts is started by bench/soak.ts (IPC)\n'); process.exit(2); }
  process.on('message', (m: Start | { cmd: 'stop' }) => {
    if (m.cmd === 'stop') { stopping = true; return; }
    void run(m).then(() => process.disconnect());
  });
  process.send({ ready: true });
}
