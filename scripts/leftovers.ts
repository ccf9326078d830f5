/**
 * Processes a test run left behind. Every process the suite starts carries the run's marker in
 * its environment (`GHOSTGATE_TEST_RUN=<id>`: `scripts/test.ts` sets it for tap, and everything
 * tap and the tests start inherits it; `test/helpers/proc.ts` passes it on explicitly), so once
 * the run is over any live process whose /proc/<pid>/environ holds it was left running.
 *
 *   node scripts/leftovers.ts <id>   prints what was left, kills it, exits 1 (0 if none)
 *
 * Linux only (/proc); elsewhere it finds nothing.
 */
import { readdirSync, readFileSync } from 'node:fs';

export const TEST_RUN_ENV = 'GHOSTGATE_TEST_RUN';

export interface Leftover { pid: number; args: string }

/** This process and its ancestors: they may carry the marker themselves (.ci/run exports it). */
function lineage(): Set<number> {
  const pids = new Set<number>();
  let pid = process.pid;
  while (pid > 1 && !pids.has(pid)) {
    pids.add(pid);
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      pid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]); // field 4: ppid
    } catch { break; }
  }
  return pids;
}

/** Live processes (not this one or its ancestors, not zombies) whose environment holds the marker. */
export function findLeftovers(runId: string): Leftover[] {
  const marker = Buffer.from(`\0${TEST_RUN_ENV}=${runId}\0`);
  const mine = lineage();
  const found: Leftover[] = [];
  let entries: string[];
  try { entries = readdirSync('/proc'); } catch { return found; }
  for (const e of entries) {
    const pid = Number(e);
    if (!Number.isInteger(pid) || pid <= 1 || mine.has(pid)) continue;
    try {
      const env = Buffer.concat([Buffer.from([0]), readFileSync(`/proc/${pid}/environ`)]);
      if (env.indexOf(marker) === -1) continue;
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
      found.push({ pid, args });
    } catch { /* gone, or not ours to read */ }
  }
  return found;
}

/**
 * Wait (up to `graceMs`) for the run's processes to exit on their own: one that is still stopping
 * as tap returns is not a leak. Then print and SIGKILL whatever is left; returns it.
 */
export async function reapLeftovers(runId: string, graceMs = 3000, log: (line: string) => void = console.log): Promise<Leftover[]> {
  const end = Date.now() + graceMs;
  let left = findLeftovers(runId);
  while (left.length > 0 && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    left = findLeftovers(runId);
  }
  if (left.length === 0) return left;
  log(`# ${left.length} process(es) the test run started were still running when it ended (now killed):`);
  for (const p of left) {
    log(`#   pid ${p.pid}: ${p.args}`);
    try { process.kill(p.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  return left;
}

if (import.meta.main) {
  const runId = process.argv[2] ?? process.env[TEST_RUN_ENV];
  if (!runId) {
    console.error(`usage: node scripts/leftovers.ts <run id> (or set ${TEST_RUN_ENV})`);
    process.exit(2);
  }
  const left = await reapLeftovers(runId);
  process.exit(left.length > 0 ? 1 : 0);
}
