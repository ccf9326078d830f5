// Loaded into the gateway only by bench/memprobe.ts (`node --expose-gc --import`): on SIGUSR2 it
// records process.memoryUsage(), forces a full GC (twice, 200 ms apart), records it again, and writes both to
// $MEMPROBE_OUT. Never loaded by the gateway otherwise.
import { writeFileSync } from 'node:fs';

const mb = (n) => +(n / 2 ** 20).toFixed(1);
const usage = () => {
  const m = process.memoryUsage();
  return { rss: mb(m.rss), heapUsed: mb(m.heapUsed), heapTotal: mb(m.heapTotal), external: mb(m.external), arrayBuffers: mb(m.arrayBuffers) };
};
process.on('SIGUSR2', () => {
  const before = usage();
  globalThis.gc?.();
  // Native objects (HTTP/2 sessions and their nghttp2 memory, counted in `external`) are freed by
  // weak callbacks and cleanup tasks after the GC: collect again once those have run.
  setTimeout(() => {
    globalThis.gc?.();
    setImmediate(() => writeFileSync(process.env.MEMPROBE_OUT, JSON.stringify({ before, after: usage() })));
  }, 200);
});
