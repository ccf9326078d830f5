/**
 * `npm test`: type-check, then run every tap test file, then print the one line CI reads:
 * `N passed, N failed` (tap's own summary is not in a form CI understands).
 *
 * Everything the run starts carries `GHOSTGATE_TEST_RUN=<id>` in its environment; a process
 * still alive once tap is done is printed, killed, and fails the run (`scripts/leftovers.ts`).
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { TEST_RUN_ENV, reapLeftovers } from './leftovers.ts';

const root = path.resolve(import.meta.dirname, '..');
const bin = (name: string): string => path.join(root, 'node_modules/.bin', name);

// Node's compile cache for every Node process of the run: tsc's, tap's, the test files', and the
// gateways, workers, model servers and CLIs they start (hundreds), which all load the same
// TypeScript. Node keeps the stripped source and V8's code on disk, so only the first process to
// load a file compiles it; starting is most of what these processes do on a loaded machine.
const compileCache = process.env.NODE_COMPILE_CACHE || path.join(os.tmpdir(), 'ghostgate-compile-cache');
const env = { ...process.env, NODE_COMPILE_CACHE: compileCache };

const tsc = spawnSync(bin('tsc'), ['-p', root], { stdio: 'inherit', env });
if (tsc.status !== 0) {
  console.log('type check failed');
  console.log('0 passed, 1 failed');
  process.exit(1);
}

const runId = process.env[TEST_RUN_ENV] || randomUUID();
const args = ['run', '--reporter=tap', ...process.argv.slice(2)];
const child = spawn(bin('tap'), args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], env: { ...env, [TEST_RUN_ENV]: runId } });
let tail = '';
child.stdout.on('data', (d: Buffer) => {
  process.stdout.write(d);
  tail = (tail + d.toString()).slice(-4096);
});
child.on('close', async (code) => {
  const left = await reapLeftovers(runId);
  // tap's last summary line: `# { total: 230, pass: 228, fail: 2, skip: 1 }`
  const m = /# \{ total: (\d+)(?:, pass: (\d+))?(?:, fail: (\d+))?(?:, todo: (\d+))?(?:, skip: (\d+))?/.exec(tail.slice(tail.lastIndexOf('# { total')));
  const pass = Number(m?.[2] ?? 0);
  let fail = Number(m?.[3] ?? 0);
  const skip = Number(m?.[5] ?? 0) + Number(m?.[4] ?? 0);
  if (!m || (code !== 0 && fail === 0)) fail = Math.max(fail, 1); // a crash is a failure
  if (left.length > 0) fail += 1; // a process left behind is a failure of the run
  console.log(`${pass} passed, ${fail} failed${skip ? `, ${skip} skipped` : ''}`);
  process.exit(code === 0 && fail === 0 ? 0 : 1);
});
