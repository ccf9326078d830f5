/**
 * The bundled fake model server as the benchmark runs it: the same server and CLI flags as
 * `node model-server/main.ts` (--port --ttft-ms --token-ms --tokens --goaway-every ...), in its own
 * process, plus one thing for the benchmark: it remembers which request ids arrived and when they
 * completed (high-resolution epoch times), so bench/run.ts can tell a cancel that never reached
 * the upstream ("never sent") from one the upstream served without seeing a reset, and a reset
 * that came too late from a cancel made after the upstream had already finished.
 *
 * Counters and abort records come from the ordinary `GET /_stats`; the arrivals over IPC:
 *   parent → {cmd: 'arrivals', prefix}
 *   child  → {arrivals: [[id, arrivedEpochMs, completedEpochMs or -1], ...]} (and forgets them)
 */
import { parseModelServerArgs } from '../model-server/main.ts';
import { startModelServer } from '../model-server/server.ts';
import type { CompleteRecord, RequestRecord } from '../model-server/server.ts';

const MAX_ARRIVALS = 500_000;

const { help, ...opts } = parseModelServerArgs(process.argv.slice(2));
if (help) process.exit(0);
const handle = await startModelServer(opts);
/** id → [arrival, completion or -1] (epoch ms). */
const arrivals = new Map<string, [number, number]>();
// Off for the throughput section (BENCH_TRACK_ARRIVALS=0): no per-request work beyond the server's own.
if (process.env.BENCH_TRACK_ARRIVALS !== '0') {
  handle.events.on('request', (r: RequestRecord) => {
    if (arrivals.size < MAX_ARRIVALS) arrivals.set(r.id, [r.atEpochMs, -1]);
  });
  handle.events.on('complete', (c: CompleteRecord) => {
    const a = arrivals.get(c.id);
    if (a) a[1] = c.atEpochMs;
  });
}

process.on('message', (m: { cmd: string; prefix?: string }) => {
  if (m.cmd !== 'arrivals') return;
  const prefix = m.prefix ?? '';
  const out: Array<[string, number, number]> = [];
  for (const [id, [at, doneAt]] of arrivals) {
    if (id.startsWith(prefix)) { out.push([id, at, doneAt]); arrivals.delete(id); }
  }
  process.send?.({ arrivals: out });
});

process.stdout.write(JSON.stringify({ event: 'listening', port: handle.port, host: handle.host }) + '\n');
const stop = (): void => {
  process.off('SIGTERM', stop);
  process.off('SIGINT', stop);
  handle.close().then(() => process.exit(0), () => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
