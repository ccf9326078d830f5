/**
 * What a gateway process does with a fault nothing else caught, in its own processes only
 * (`ghostgate start`: a single one, a cluster's primary and each worker); importing the core as
 * a library installs nothing (the embedder's process, the embedder's policy).
 *
 * - An unhandled promise rejection (a plugin's or a library's forgotten `.catch`): Node 24 ends
 *   the process on one, and with it every stream in flight. By default (`server.onUnhandledRejection:
 *   log`) the process logs it at `error` level, once per distinct error (its stack, or its value),
 *   counts every one in `ghostgate_unhandled_rejections_total`, and keeps serving. `exit` logs it
 *   at `fatal` and exits 1, as Node would.
 * - An uncaught exception: the process's state is unknown, so it still exits (1), having logged
 *   the error at `fatal`. A cluster's primary replaces a worker that exits so.
 *
 * Logged: the error's name, message and stack, none of its other properties (a library's error
 * may carry the request it made, with its credentials); the logger redacts the usual keys too.
 * test/core/process-faults.test.ts runs each in real `ghostgate start` processes.
 */
import { Counter } from 'prom-client';
import type { Registry } from 'prom-client';

export type RejectionPolicy = 'log' | 'exit';

/** What the handlers log with (the gateway's pino logger). */
interface FaultLog {
  error(o: object, msg: string): void;
  fatal(o: object, msg: string): void;
}

/** Distinct rejections logged at most; past this they are counted, not logged. */
const MAX_DISTINCT = 1000;

const state = {
  installed: false,
  log: undefined as FaultLog | undefined,
  policy: 'log' as RejectionPolicy,
  rejections: 0,
  seen: new Set<string>(),
};

/**
 * Install the handlers in this process (once; a later call changes the logger and the policy).
 * `ghostgate start` calls it once the gateway (or the primary) has started.
 */
export function installFaultHandlers(log: FaultLog, policy: RejectionPolicy): void {
  state.log = log;
  state.policy = policy;
  if (state.installed) return;
  state.installed = true;
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onUncaught);
}

/** `ghostgate_unhandled_rejections_total` in `registry`: this process's count since it started. */
export function registerFaultMetrics(registry: Registry): void {
  new Counter({
    name: 'ghostgate_unhandled_rejections_total',
    help: 'Promise rejections nothing handled, logged and survived (server.onUnhandledRejection: log)',
    registers: [registry],
    collect() { this.reset(); this.inc(state.rejections); },
  });
}

function onRejection(reason: unknown): void {
  const log = state.log!;
  const fields = describe(reason);
  if (state.policy === 'exit') {
    log.fatal(fields, 'unhandled promise rejection: exiting (server.onUnhandledRejection: exit)');
    process.exit(1);
  }
  state.rejections++;
  const key = fields.stack ?? `${fields.type}: ${fields.err}`;
  if (state.seen.has(key)) return;
  if (state.seen.size === MAX_DISTINCT) return;
  state.seen.add(key);
  log.error({ ...fields, distinct: state.seen.size, ...(state.seen.size === MAX_DISTINCT ? { more: 'further distinct rejections are counted, not logged' } : {}) },
    'unhandled promise rejection (logged once per distinct error; counted in ghostgate_unhandled_rejections_total): the process goes on');
}

function onUncaught(err: unknown, origin: string): void {
  state.log!.fatal({ ...describe(err), origin }, 'uncaught exception: exiting (the process state is unknown)');
  process.exit(1);
}

/** The error's name, message and stack; a non-Error's type and text. */
function describe(e: unknown): { type: string; err: string; stack?: string } {
  if (e instanceof Error) return { type: e.name, err: e.message, ...(e.stack !== undefined ? { stack: e.stack } : {}) };
  let text: string;
  try { text = String(e); } catch { text = Object.prototype.toString.call(e); }
  return { type: e === null ? 'null' : typeof e, err: text };
}
