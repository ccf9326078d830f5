/**
 * CLI entry of the fake model server:
 *
 *   node model-server/main.ts [--port N] [--host H] [--ttft-ms N] [--token-ms N] [--tokens N]
 *                             [--goaway-every N] [--max-concurrent-streams N] [--key SECRET]
 *                             [--drain-ms N]
 *
 * Once listening it prints exactly one line to stdout, for a parent process to read:
 *   {"event":"listening","port":<port>,"host":"<host>"}
 * and nothing else afterwards (no per-request logging). SIGTERM/SIGINT drain it and exit 0: it
 * stops listening, refuses new requests, lets those in flight finish (at most --drain-ms, then
 * cuts them); a second signal cuts them at once.
 */
import { parseArgs } from 'node:util';
import { MODEL_SERVER_DEFAULTS, startModelServer } from './server.ts';
import type { ModelServerOptions } from './server.ts';

/** How long SIGTERM lets in-flight requests run before cutting them. */
export const DRAIN_MS_DEFAULT = 10_000;

export const MODEL_SERVER_USAGE = `Usage: model-server [options]

A fake OpenAI-compatible completion server (h2c and HTTP/1.1 on one port).

Options:
  --port N                     port, 0 = any free port (default ${MODEL_SERVER_DEFAULTS.port})
  --host H                     interface to bind (default ${MODEL_SERVER_DEFAULTS.host})
  --ttft-ms N                  time to first token in ms (default ${MODEL_SERVER_DEFAULTS.ttftMs})
  --token-ms N                 ms between tokens, 0 = all at once (default ${MODEL_SERVER_DEFAULTS.tokenMs})
  --tokens N                   tokens per response (default ${MODEL_SERVER_DEFAULTS.tokens})
  --goaway-every N             h2: GOAWAY when a session's N-th stream arrives; 0 = off (default 0)
  --max-concurrent-streams N   h2 SETTINGS_MAX_CONCURRENT_STREAMS (default ${MODEL_SERVER_DEFAULTS.maxConcurrentStreams})
  --key SECRET                 require "authorization: Bearer SECRET"
  --fail-status N              answer every model request with status N (e.g. 503, 429), no token;
                               POST /_fail?status=N&retryAfter=S changes it at run time (0 = stop)
  --retry-after S              with --fail-status: a Retry-After: S header (seconds)
  --name NAME                  an x-model-server: NAME header on every model response
  --drain-ms N                 on SIGTERM/SIGINT, let in-flight requests finish for up to N ms,
                               then cut them; a second signal cuts at once (default ${DRAIN_MS_DEFAULT})
  -h, --help                   show this help
`;

/** Parse CLI arguments into options; throws a TypeError with a readable message if invalid. */
export function parseModelServerArgs(argv: string[]): ModelServerOptions & { help: boolean; drainMs: number } {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      'ttft-ms': { type: 'string' },
      'token-ms': { type: 'string' },
      tokens: { type: 'string' },
      'goaway-every': { type: 'string' },
      'max-concurrent-streams': { type: 'string' },
      key: { type: 'string' },
      'fail-status': { type: 'string' },
      'retry-after': { type: 'string' },
      name: { type: 'string' },
      'drain-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const int = (name: string): number | undefined => {
    const v = (values as Record<string, string | boolean | undefined>)[name];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || !/^\d{1,9}$/.test(v)) throw new TypeError(`--${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  const opts: ModelServerOptions & { help: boolean; drainMs: number } = { help: values.help === true, drainMs: int('drain-ms') ?? DRAIN_MS_DEFAULT };
  const port = int('port');
  if (port !== undefined && port > 65535) throw new TypeError(`--port out of range: ${port}`);
  if (port !== undefined) opts.port = port;
  if (values.host !== undefined) opts.host = values.host;
  const ttft = int('ttft-ms'); if (ttft !== undefined) opts.ttftMs = ttft;
  const tok = int('token-ms'); if (tok !== undefined) opts.tokenMs = tok;
  const n = int('tokens'); if (n !== undefined) opts.tokens = n;
  const g = int('goaway-every'); if (g !== undefined) opts.goawayEvery = g;
  const m = int('max-concurrent-streams'); if (m !== undefined) opts.maxConcurrentStreams = m;
  const fs = int('fail-status');
  if (fs !== undefined && fs !== 0 && (fs < 400 || fs > 599)) throw new TypeError(`--fail-status must be 400-599 (or 0), got ${fs}`);
  if (fs !== undefined) opts.failStatus = fs;
  const ra = int('retry-after'); if (ra !== undefined) opts.retryAfter = ra;
  if (values.name !== undefined) opts.name = values.name;
  if (values.key !== undefined) {
    if (values.key === '') throw new TypeError('--key must not be empty');
    opts.key = values.key;
  }
  return opts;
}

/**
 * Run the server until SIGTERM/SIGINT; resolves once it has closed. Invalid arguments reject
 * with a TypeError (the caller prints it and exits 2).
 */
export async function runModelServerCli(argv: string[]): Promise<void> {
  const { help, drainMs, ...opts } = parseModelServerArgs(argv);
  if (help) { process.stdout.write(MODEL_SERVER_USAGE); return; }
  const handle = await startModelServer(opts);
  process.stdout.write(JSON.stringify({ event: 'listening', port: handle.port, host: handle.host }) + '\n');
  await new Promise<void>((resolve) => {
    let signals = 0;
    const stop = (): void => {
      // First signal: drain. Second: cut what is still running.
      if (++signals === 1) handle.drain(drainMs).then(resolve, resolve);
      else handle.close().then(resolve, resolve);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}

if (import.meta.main) {
  runModelServerCli(process.argv.slice(2)).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`model-server: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(err instanceof TypeError ? 2 : 1);
    },
  );
}
