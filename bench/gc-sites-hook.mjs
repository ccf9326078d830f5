// Loaded into a server only by `bench/gc-survival.ts --sites` (`node --import`), never otherwise.
// Each SIGUSR2 stops the V8 heap sampling in progress, if any (its profile goes to
// $GC_SITES_DIR/<mode>.heapprofile), and starts the next of two modes:
//   all:       every sampled allocation (objects collected by minor and by major GCs kept)
//   survivors: objects collected by a minor GC (scavenge) left out: what outlived a scavenge
// then prints one JSON line {"gcSites": ...} on stdout, which the bench waits for.
// The inspector session is this process's own (node:inspector): no port is opened.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';

const MODES = [
  ['all', { includeObjectsCollectedByMinorGC: true, includeObjectsCollectedByMajorGC: true }],
  ['survivors', { includeObjectsCollectedByMinorGC: false, includeObjectsCollectedByMajorGC: true }],
];
const interval = Number(process.env.GC_SITES_INTERVAL ?? 8192);
const session = new Session();
session.connect();
const post = (method, params) => new Promise((resolve, reject) => session.post(method, params, (e, r) => (e ? reject(e) : resolve(r))));
await post('HeapProfiler.enable');

let next = 0;
let running;
process.on('SIGUSR2', async () => {
  if (running !== undefined) {
    const { profile } = await post('HeapProfiler.stopSampling');
    writeFileSync(path.join(process.env.GC_SITES_DIR, `${running}.heapprofile`), JSON.stringify(profile));
    running = undefined;
  }
  if (next < MODES.length) {
    const [mode, flags] = MODES[next++];
    await post('HeapProfiler.startSampling', { samplingInterval: interval, ...flags });
    running = mode;
  }
  process.stdout.write(`${JSON.stringify({ gcSites: running ?? 'done' })}\n`);
});
