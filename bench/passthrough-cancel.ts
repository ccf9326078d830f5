/**
 * How long a client's cancel takes to reach the upstream, passthrough vs completions:
 * `npx node bench/passthrough-cancel.ts [--cancels 200]`.
 *
 * A gateway process (`ghostgate start`) in front of two upstreams that live in this process and
 * hold every request unanswered: an HTTP/1.1 one for a `passthrough:` route (undici under
 * @fastify/http-proxy; test/helpers/fake-openai.ts) and an h2c one for completions (the gateway's
 * HTTP/2 pool). For each cancel: send a request, wait until the upstream holds it, then reset the
 * client's HTTP/2 stream (RST_STREAM CANCEL) or close its HTTP/1.1 socket, and time until the
 * upstream sees its request go (passthrough: its connection closed; completions: its stream
 * reset; for passthrough also when its socket saw the connection end). Client and upstreams share this process's clock; the gateway is the only thing between.
 * Kinds are interleaved, one request at a time. Prints p50 / p90 / p99 / max per kind. (The
 * bundled model server the helper starts is not used.) Everything it starts is stopped at the end.
 */
import http from 'node:http';
import http2 from 'node:http2';
import type { ClientHttp2Session, ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { EventEmitter, once } from 'node:events';
import { parseArgs } from 'node:util';
import { fakeOpenAI } from '../test/helpers/fake-openai.ts';
import type { FakeOpenAI } from '../test/helpers/fake-openai.ts';
import { startGatewayProcess } from '../test/helpers/gateway-process.ts';
import { within } from '../test/helpers/h2.ts';

const { values } = parseArgs({ options: { cancels: { type: 'string', default: '200' } } });
const N = Number(values.cancels);
const { NGHTTP2_CANCEL } = http2.constants;

/** An h2c completion upstream that holds each request; `gone` fires with the time its stream closed unanswered. */
async function holdingH2(teardowns: Array<() => unknown>): Promise<{ url: string; next(event: 'held' | 'gone', act: () => unknown): Promise<number> }> {
  const server = http2.createServer();
  const events = new EventEmitter();
  server.on('stream', (st: ServerHttp2Stream) => {
    st.on('close', () => { if (!st.headersSent) events.emit('gone', performance.now()); });
    st.on('error', () => {});
    st.resume();
    st.on('end', () => events.emit('held', performance.now()));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  teardowns.push(() => new Promise((r) => server.close(r)));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async next(event, act) { const p = once(events, event); act(); return ((await within(`the completion upstream: ${event}`, p)) as [number])[0]; },
  };
}

const pct = (xs: number[], q: number): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(q * s.length))]!; };

const teardowns: Array<() => unknown> = [];
try {
  const t = { teardown: (fn: () => unknown) => { teardowns.push(fn); } };
  const pt: FakeOpenAI = await fakeOpenAI(t);
  const cu = await holdingH2(teardowns);
  const g = await startGatewayProcess(t, {
    upstreamsYaml: () => [
      'upstreams:',
      `  held: { url: ${cu.url}, protocol: h2c, pool: { size: 1 }, timeouts: { firstByteMs: 60000 } }`,
      `  openai: { url: ${pt.url}, protocol: http1, timeouts: { firstByteMs: 60000 } }`,
      'models:',
      '  ghost-small: { upstream: held }',
    ].join('\n'),
    extraConfig: 'passthrough: [{ path: /v1/files, upstream: openai, auth: false }]',
  });
  const s: ClientHttp2Session = http2.connect(g.url);
  teardowns.push(() => s.destroy());
  await once(s, 'connect');
  const completion = JSON.stringify({ model: 'ghost-small', prompt: 'def fib(', stream: true });
  const h2req = (path: string, body: string): http2.ClientHttp2Stream => {
    const st = s.request({ ':method': 'POST', ':path': path, 'content-type': 'application/json' });
    st.on('error', () => {});
    st.end(body);
    return st;
  };
  const h1req = (path: string, body: string): http.ClientRequest => {
    const req = http.request(`${g.url}${path}`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } });
    req.on('error', () => {});
    req.end(body);
    return req;
  };
  type Cancel = () => void;
  /** Passthrough: also when the upstream's socket saw the connection end (its FIN), before Node's HTTP server closes the request. */
  const socketEnd: Record<string, number[]> = {};
  const passthrough = async (name: string, send: () => Cancel): Promise<number> => {
    let c!: Cancel;
    const h = await pt.nextHeld(() => { c = send(); });
    let at = 0;
    h.res.socket!.once('end', () => (socketEnd[name] ??= []).push(performance.now() - at));
    const g = await pt.nextGone(() => { at = performance.now(); c(); });
    return g.goneAt - at;
  };
  const kinds: Record<string, () => Promise<number>> = {
    'passthrough HTTP/2 ': () => passthrough('passthrough HTTP/2 ', () => { const st = h2req('/v1/files/slow', '{}'); return () => st.close(NGHTTP2_CANCEL); }),
    'passthrough HTTP/1.1': () => passthrough('passthrough HTTP/1.1', () => { const r = h1req('/v1/files/slow', '{}'); return () => r.destroy(); }),
    'completions HTTP/2 ': async () => {
      let c!: Cancel; await cu.next('held', () => { const st = h2req('/v1/completions', completion); c = () => st.close(NGHTTP2_CANCEL); });
      let at = 0; const gone = await cu.next('gone', () => { at = performance.now(); c(); }); return gone - at;
    },
    'completions HTTP/1.1': async () => {
      let c!: Cancel; await cu.next('held', () => { const r = h1req('/v1/completions', completion); c = () => r.destroy(); });
      let at = 0; const gone = await cu.next('gone', () => { at = performance.now(); c(); }); return gone - at;
    },
  };
  const took: Record<string, number[]> = {};
  for (let i = 0; i < 20; i++) for (const k of Object.values(kinds)) await k(); // warm-up
  for (let i = 0; i < N; i++) for (const [name, k] of Object.entries(kinds)) (took[name] ??= []).push(await k());
  console.log(`client cancel -> upstream sees it, ms, ${N} cancels each (one at a time, kinds interleaved):`);
  for (const [name, xs] of Object.entries(took)) {
    console.log(`  ${name}  p50 ${pct(xs, 0.5).toFixed(2)}  p90 ${pct(xs, 0.9).toFixed(2)}  p99 ${pct(xs, 0.99).toFixed(2)}  max ${Math.max(...xs).toFixed(2)}`);
  }
  for (const [name, xs] of Object.entries(socketEnd)) {
    console.log(`  ${name}  (its upstream socket saw the end: p50 ${pct(xs, 0.5).toFixed(2)}  p90 ${pct(xs, 0.9).toFixed(2)})`);
  }
  console.log(`passthrough upstream requests still open: ${pt.inFlight()}`);
} finally {
  for (const fn of teardowns.reverse()) await fn();
}
