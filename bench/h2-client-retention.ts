/**
 * Whether Node's HTTP/2 client really keeps finished streams, or only the scavenger does: a
 * closed-loop client (bench/closed-loop.ts) against an HTTP/2 server, a weak reference to every
 * client stream (diagnostics channel `http2.client.stream.created`), and every 0.5 s a full GC
 * and a count of the streams that have closed and are still alive.
 *
 *   npx node --expose-gc bench/h2-client-retention.ts http://127.0.0.1:PORT [--requests 20000]
 *
 * (PORT: any HTTP/2 server answering POST /v1/completions, e.g. `npx node model-server/main.ts
 * --port 0 --ttft-ms 0 --token-ms 0 --tokens 4`.) Result (bench/README.md, GC): after each full
 * GC only the streams in flight are alive, none that has closed, while `gc-survival.ts` shows
 * ~23% of the same client's allocation surviving scavenges: what keeps them is not a reference
 * from a live object but one from dead objects in the old generation, which only a mark-compact
 * frees (a scavenge treats every old-to-young pointer as live).
 */
import dc from 'node:diagnostics_channel';
import type { ClientHttp2Stream } from 'node:http2';
import { parseArgs } from 'node:util';
import { h2ClosedLoop } from './closed-loop.ts';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { requests: { type: 'string', default: '20000' } } });
const gc = (globalThis as { gc?: () => void }).gc;
if (positionals[0] === undefined || gc === undefined) {
  process.stderr.write('usage: npx node --expose-gc bench/h2-client-retention.ts http://127.0.0.1:PORT [--requests N]\n');
  process.exit(2);
}
const BODY = JSON.stringify({ model: 'ghost-small', prompt: 'def fib(n):', stream: true, max_tokens: 4 });
const streams: Array<{ ref: WeakRef<ClientHttp2Stream>; closed: boolean }> = [];
dc.subscribe('http2.client.stream.created', (m) => {
  const s = (m as { stream: ClientHttp2Stream }).stream;
  const e = { ref: new WeakRef(s), closed: false };
  streams.push(e);
  s.once('close', () => { e.closed = true; });
});
const count = (): string => {
  gc();
  const open = streams.filter((e) => !e.closed).length;
  const closedAlive = streams.filter((e) => e.closed && e.ref.deref() !== undefined).length;
  return `${streams.length} streams: ${open} open, ${closedAlive} closed and still alive after a full GC`;
};
const timer = setInterval(() => console.log(count()), 500);
await h2ClosedLoop(positionals[0], Number(values.requests), BODY, 64, 4);
clearInterval(timer);
await new Promise((r) => setImmediate(r));
console.log(`after the load: ${count()}`);
