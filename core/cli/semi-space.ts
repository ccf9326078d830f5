/**
 * The gateway process's young generation: V8's `--max-semi-space-size` (MB), from
 * `server.semiSpaceMb` (default 8; 0 or null = Node's own default), for `ghostgate start`'s
 * processes (a single one, a cluster's primary and its workers).
 *
 *   const plan = semiSpacePlan(config.server.semiSpaceMb);      // what this process should run with
 *   if (plan.reexec) reexecWith(plan.flag);                      // never returns (same pid, new image)
 *
 * Why a re-exec: V8 sizes the young generation when it sets up the heap, before any JS runs.
 * `v8.setFlagsFromString('--max-semi-space-size=8')` at startup is accepted and does nothing:
 * measured on Node 24.21 with 20 M short-lived objects, new_space grew to 128 MB and took 48
 * scavenges with it, as without it (45), while `node --max-semi-space-size=8` kept new_space at
 * 16 MB (358 scavenges). The flag must be on Node's command line or in NODE_OPTIONS, and the
 * value comes from the config, which only the started process reads. So `ghostgate start` reads
 * its config, then, when the flag is missing, replaces its own process image with
 * `process.execve` (same pid, same stdio, same environment, no parent process left behind) with
 * the flag added; the new image finds the flag and runs as before. Signals, exit codes and the
 * supervisor's view (one pid) are those of a single process, because it is one. This covers every
 * way of starting it (`npm start`, `npx ghostgate start`, `node bin/ghostgate.ts start`, a
 * shebang). Cluster workers are forked with the primary's execArgv (node:cluster's default),
 * which then holds the flag; core/cluster/primary.ts adds it too when the primary runs without it.
 *
 * The user's own `--max-semi-space-size` (in Node's arguments or NODE_OPTIONS) wins: nothing is
 * added and the config value is not used. Where `process.execve` does not exist (Windows) the
 * process runs with Node's default and says so in the banner.
 */

/** The Node/V8 flag, as Node spells it (V8 also takes underscores). */
export const SEMI_SPACE_FLAG = '--max-semi-space-size';
/** Set in the environment of the re-executed image only, so it can tell its flag from the user's. */
const MARK = 'GHOSTGATE_SEMI_SPACE_FROM_CONFIG';

const FLAG_RE = /^--max[-_]semi[-_]space[-_]size(?:=(.*))?$/;

/** The value of a `--max-semi-space-size` among Node arguments (`=N` or a separate `N`), or undefined. */
export function semiSpaceIn(args: readonly string[]): string | undefined {
  let found: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const m = FLAG_RE.exec(args[i]!);
    if (m) found = m[1] ?? args[i + 1] ?? '';
  }
  return found;
}

/** Where the young generation's size of this process comes from. */
export type SemiSpaceSource = 'config' | 'execArgv' | 'NODE_OPTIONS' | 'node-default' | 'no-execve';

export interface SemiSpacePlan {
  /** The semi-space size in MB the process runs with; undefined = Node's default. */
  mb: number | undefined;
  source: SemiSpaceSource;
  /** The process must re-execute itself with `flag` to get `mb`. */
  reexec: boolean;
  /** `--max-semi-space-size=<mb>` when the config sets it, else undefined. */
  flag: string | undefined;
}

/**
 * What the process should run with, given the config's `server.semiSpaceMb` and how Node was
 * started (`execArgv`, `NODE_OPTIONS`, and whether this image is already the re-executed one).
 */
export function semiSpacePlan(configMb: number | null | undefined, execArgv: readonly string[] = process.execArgv, env: NodeJS.ProcessEnv = process.env): SemiSpacePlan {
  const inArgs = semiSpaceIn(execArgv);
  const fromConfig = !!configMb && configMb > 0 ? configMb : undefined;
  const flag = fromConfig ? `${SEMI_SPACE_FLAG}=${fromConfig}` : undefined;
  if (inArgs !== undefined) {
    // Ours if this image was re-executed with exactly this flag; anything else the user gave.
    const ours = env[MARK] !== undefined && env[MARK] === inArgs;
    return { mb: Number(inArgs) || undefined, source: ours ? 'config' : 'execArgv', reexec: false, flag };
  }
  const inEnv = semiSpaceIn((env.NODE_OPTIONS ?? '').split(/\s+/).filter(Boolean));
  if (inEnv !== undefined) return { mb: Number(inEnv) || undefined, source: 'NODE_OPTIONS', reexec: false, flag };
  if (!fromConfig) return { mb: undefined, source: 'node-default', reexec: false, flag };
  if (typeof process.execve !== 'function' || process.argv[1] === undefined) return { mb: undefined, source: 'no-execve', reexec: false, flag };
  return { mb: fromConfig, source: 'config', reexec: true, flag };
}

/**
 * Replace this process's image with the same Node, its arguments and `flag` (process.execve:
 * same pid, stdio and environment). Call before anything listens, starts a timer or writes.
 * Never returns; throws if execve fails (the caller then runs on without the flag).
 */
export function reexecWith(flag: string): never {
  const value = semiSpaceIn([flag])!;
  process.execve!(process.execPath, [process.execPath, ...process.execArgv, flag, ...process.argv.slice(1)], { ...process.env, [MARK]: value });
  throw new Error('process.execve returned');
}

/** Forget the re-exec mark, so no child process (a worker, a plugin's) takes the flag for ours. */
export function clearReexecMark(): void { delete process.env[MARK]; }

/**
 * Node arguments for a cluster worker: the primary's `execArgv` (with the flag once re-executed),
 * plus the config's flag when the primary could not re-execute (no process.execve).
 */
export function workerExecArgv(plan: SemiSpacePlan, execArgv: readonly string[] = process.execArgv): string[] {
  return plan.source === 'no-execve' && plan.flag ? [...execArgv, plan.flag] : [...execArgv];
}

/** The banner's line: what the process runs with and who decided it. */
export function describeSemiSpace(plan: SemiSpacePlan): string {
  const size = plan.mb === undefined ? 'Node\'s default' : `${plan.mb} MB`;
  const why = plan.source === 'config' ? 'server.semiSpaceMb'
    : plan.source === 'node-default' ? 'server.semiSpaceMb: 0'
    : plan.source === 'no-execve' ? `server.semiSpaceMb asks ${semiSpaceIn([plan.flag!])} MB; only workers get it: no process.execve here`
    : `${SEMI_SPACE_FLAG} in ${plan.source}, over server.semiSpaceMb`;
  return `semi-space ${size} (${why})`;
}
