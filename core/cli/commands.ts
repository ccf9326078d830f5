/**
 * The CLI's commands, each a small function over the core's public API.
 *
 * Why one file over 250 lines: one short function per command, side by side, so their flags and
 * exit codes read consistently; none is long.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { builtinPlugins } from '../../plugins/index.ts';
import { startBundledModel } from '../bundled-model.ts';
import type { BundledModel } from '../bundled-model.ts';
import { loadConfig, loadConfigStaged } from '../config/load.ts';
import { ConfigErrors, GatewayError } from '../errors.ts';
import { Gateway, listenError, packageFile } from '../gateway.ts';
import { GatewayMetrics } from '../metrics.ts';
import { silentLogger } from '../plugin-context.ts';
import { secretReader } from '../secrets.ts';
import { buildRuntime, checkPolicySteps } from '../runtime.ts';
import { applyRuntimePatches } from '../runtime-patches.ts';
import { installFaultHandlers, registerFaultMetrics } from '../process-faults.ts';
import { clearReexecMark, describeSemiSpace, reexecWith, semiSpacePlan, workerExecArgv } from './semi-space.ts';
import { declaredIn } from '../step-check.ts';
import type { BannerInfo } from '../cluster/ipc.ts';
import type { SemiSpacePlan } from './semi-space.ts';
import { Primary } from '../cluster/primary.ts';
import { bannerInfo } from '../cluster/worker.ts';
import type { PluginDefinition } from '../types.ts';

export interface Command { summary: string; run(argv: string[]): Promise<number | void> }

const configOpt = { config: { type: 'string' as const, short: 'c' }, help: { type: 'boolean' as const, short: 'h' } };
export const DEFAULT_CONFIG = packageFile('gateway.config.yaml');

export const commands: Record<string, Command> = {
  start: {
    summary: 'Run the gateway (default config: the bundled gateway.config.yaml); --workers N for N processes',
    async run(argv) {
      const { values } = parseArgs({ args: argv, options: { ...configOpt, workers: { type: 'string' as const, short: 'w' } } });
      if (values.help) {
        console.log('Usage: ghostgate start [--config gateway.config.yaml] [--workers N|auto]\n--workers: processes sharing the listeners (default server.workers, 1; auto = one per core).\nSIGHUP reloads the config; SIGTERM/SIGINT shut down gracefully.');
        return 0;
      }
      const file = values.config ?? DEFAULT_CONFIG;
      let model: BundledModel | undefined;
      let gw: Gateway | undefined;
      let primary: Primary | undefined;
      let semi: SemiSpacePlan;
      try {
        const pre = loadConfig(file);
        // The young generation's size is fixed when Node starts: re-execute this same process
        // with the flag when it lacks it (core/cli/semi-space.ts). Nothing has started yet.
        semi = semiSpacePlan(pre.config.server.semiSpaceMb);
        if (semi.reexec) reexecWith(semi.flag!);
        clearReexecMark();
        // This process is the gateway's own (a single one, or the cluster's primary; each worker
        // applies them at its start): Node's runtime patches, unless the config keeps Node as it is.
        applyRuntimePatches(pre.config.server);
        const workers = resolveWorkers(values.workers ?? pre.config.server.workers);
        const ms = pre.config.modelServer;
        if (ms.enabled) {
          model = await startBundledModel(ms).catch((e: unknown) => {
            const envs = pre.source.envNames(['modelServer', 'port']);
            throw listenError(e, 'bundled model server', ms.host, ms.port, () => `modelServer.port${envs.length ? ` (env ${envs.join(', ')})` : ''} in ${pre.file}`);
          });
        }
        if (workers > 1) primary = await Primary.start({ configFile: file, workers, workerExecArgv: workerExecArgv(semi) });
        else gw = await Gateway.start({ configFile: file });
        // Unhandled rejections and uncaught exceptions, logged (each worker installs its own).
        if (gw) registerFaultMetrics(gw.metrics.registry);
        installFaultHandlers(primary?.log ?? gw!.log, pre.config.server.onUnhandledRejection);
      } catch (e) {
        await model?.stop();
        if (e instanceof ConfigErrors) { printConfigErrors(file, e); return 1; }
        // One line (for a port: which, and what sets it), exit 1; everything that started is
        // closed. Any coded failure: a worker reports whatever code stopped it.
        if (e instanceof GatewayError) { process.stderr.write(`ghostgate start: ${e.code} ${e.message}\n`); return 1; }
        throw e;
      }
      const log = primary?.log ?? gw!.log;
      if (primary) {
        const { addresses, banner } = primary.started;
        printBanner(file, { ...addresses, admin: primary.adminUrl }, banner, model, semi, primary.ready().map((s) => s.worker.process.pid!));
      } else {
        printBanner(file, gw!.addresses!, await bannerInfo(gw!), model, semi);
      }
      process.on('SIGHUP', () => { void (primary ? primary.reload('SIGHUP') : gw!.reload('SIGHUP')); });
      return new Promise<number>((resolve) => {
        const stop = (sig: string): void => {
          log.info({ signal: sig }, 'shutting down: finishing in-flight requests');
          void (primary ? primary.close() : gw!.close()).then(() => model?.stop()).then(() => resolve(0));
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
        // A cluster whose worker keeps dying young shuts itself down (core/cluster/primary.ts).
        void primary?.gaveUp.then((e) => { process.stderr.write(`ghostgate start: ${e.code} ${e.message}\n`); return model?.stop(); }).then(() => resolve(1));
      });
    },
  },

  validate: {
    summary: 'Check the config and policies; list every problem with file:line',
    async run(argv) {
      const { values } = parseArgs({ args: argv, options: configOpt });
      if (values.help) { console.log('Usage: ghostgate validate [--config gateway.config.yaml]\nExit 0 when valid; 1 with every problem listed.'); return 0; }
      const file = values.config ?? DEFAULT_CONFIG;
      // Every stage of every file in one run: YAML, schema, references, then what only building
      // the runtime finds (plugins, params, conditions, secrets, auth), as far as each file allows.
      const plugins = builtinPlugins as ReadonlyArray<PluginDefinition<unknown>>;
      const st = loadConfigStaged(file);
      const errors = [...st.errors];
      if (st.loaded) {
        try {
          const rt = await buildRuntime(st.loaded, { log: silentLogger, metrics: new GatewayMetrics(undefined, { defaults: false }), plugins, sharedStore: new Map(), warm: false });
          await rt.retire(undefined);
        } catch (e) {
          if (!(e instanceof ConfigErrors)) throw e;
          errors.push(...e.errors);
        }
      } else {
        // Plugins the config lists are still loaded, so their steps are checked, not called unknown;
        // each step's plugin is created against what the main file declares, as far as it reads.
        const { loadExternalPlugins } = await import('../plugin-loader.ts');
        const listed = st.pluginList ? await loadExternalPlugins(st.pluginList, new Set(plugins.map((p) => p.name)), errors) : [];
        const declared = declaredIn(st.mainValue);
        for (const lp of st.policies) await checkPolicySteps(lp, [...plugins, ...listed], errors, declared);
      }
      if (errors.length) { printConfigErrors(file, new ConfigErrors(errors)); return 1; }
      const loaded = st.loaded!;
      const steps = loaded.policies.reduce((n, p) => n + p.policy.steps.length, 0);
      console.log(`${loaded.file}: OK (${Object.keys(loaded.config.upstreams).length} upstreams, ${Object.keys(loaded.config.models).length} models, ${loaded.policies.length} policies, ${steps} steps)`);
      return 0;
    },
  },

  token: {
    summary: 'Mint a short-lived completion token (uses the config\'s signing key)',
    async run(argv) {
      const { values, tokens } = parseArgs({ args: argv, options: { ...configOpt }, strict: false, tokens: true });
      if (values.help) { console.log('Usage: ghostgate token --sub NAME [--ttl 10m] [--claim k=v]... [--json] [--config F]'); return 0; }
      const file = typeof values.config === 'string' ? values.config : DEFAULT_CONFIG;
      // Everything but --config goes to the token command.
      const rest: string[] = [];
      for (const tk of tokens ?? []) {
        if (tk.kind === 'option' && (tk.name === 'config' || tk.name === 'c')) continue;
        if (tk.kind === 'option') { rest.push(tk.rawName); if (tk.value !== undefined && !tk.inlineValue) rest.push(tk.value); else if (tk.inlineValue) rest[rest.length - 1] = `${tk.rawName}=${tk.value}`; }
        else if (tk.kind === 'positional') rest.push(tk.value);
      }
      const loaded = loadConfig(file);
      const a = loaded.config.auth as { dev?: boolean; signingKeys?: unknown[] } | undefined;
      if (!a) throw new Error(`${file} has no auth: section`);
      const { runTokenCli } = await import('../auth/cli.ts');
      if (a.dev && !(a.signingKeys?.length)) {
        // Dev mode signs with an in-memory key that only the running gateway has: ask it.
        const c = loaded.config.admin;
        const admin = `http://${c.host.includes(':') ? `[${c.host}]` : c.host}:${c.port}`;
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (c.credential) headers.authorization = `Bearer ${secretReader(loaded.dir)(c.credential)}`;
        const viaAdmin = {
          async mint(claims: { sub: string; [k: string]: unknown }, ttlSeconds?: number) {
            const { sub, ...rest } = claims;
            const res = await fetch(`${admin}/-/token`, { method: 'POST', headers, body: JSON.stringify({ sub, ttlSeconds, claims: rest }) })
              .catch(() => { throw new Error(`auth.dev uses an in-memory key: start the gateway first (no admin plane answered at ${admin})`); });
            return adminBody<{ token: string; expires_at: number }>(res);
          },
        };
        await runTokenCli(rest, viaAdmin);
        return 0;
      }
      const rt = await buildRuntime(loaded, { log: silentLogger, metrics: new GatewayMetrics(undefined, { defaults: false }), plugins: builtinPlugins as ReadonlyArray<PluginDefinition<unknown>>, sharedStore: new Map(), warm: false });
      try {
        await runTokenCli(rest, rt.auth!);
      } finally { await rt.retire(undefined); }
      return 0;
    },
  },

  apikey: {
    summary: 'Make an API key for the token exchange: `apikey new --sub NAME [--append secrets/api-keys.yaml]`',
    async run(argv) {
      const { runApiKeyCli, APIKEY_CLI_USAGE } = await import('../auth/cli.ts');
      if (argv.includes('--help') || argv.includes('-h')) { console.log(APIKEY_CLI_USAGE); return 0; }
      await runApiKeyCli(argv);
      return 0;
    },
  },

  explain: {
    summary: 'Dry-run the pipeline on a request: steps, conditions, route, upstream body diff',
    async run(argv) {
      const { runExplainCli } = await import('./explain.ts');
      return runExplainCli(argv, DEFAULT_CONFIG);
    },
  },

  schema: {
    summary: 'Write JSON Schemas for gateway.config.yaml and policy files (for editors)',
    async run(argv) {
      const { runSchemaCli } = await import('./schema.ts');
      return runSchemaCli(argv);
    },
  },

  plugins: {
    summary: 'List the plugins (the values of `use:` in policies): built-in, and with --config those its plugins: list names',
    async run(argv) {
      const { values } = parseArgs({ args: argv, options: configOpt });
      if (values.help) { console.log('Usage: ghostgate plugins [--config gateway.config.yaml]'); return 0; }
      const { pluginsOfConfig } = await import('../plugin-loader.ts');
      const file = values.config;
      let all: ReadonlyArray<PluginDefinition<unknown>>;
      try {
        all = file ? await pluginsOfConfig(file) : builtinPlugins as ReadonlyArray<PluginDefinition<unknown>>;
      } catch (e) {
        if (e instanceof ConfigErrors && file) { printConfigErrors(file, e); return 1; }
        throw e;
      }
      const { pluginSource } = await import('../plugin-loader.ts');
      for (const p of all) {
        const from = pluginSource(p);
        console.log(`${p.name.padEnd(15)} ${p.description}${from === 'built-in' ? '' : `  [${from}]`}`);
      }
      console.log('\nParams and examples: plugins/<name>/README.md; JSON Schema: docs/schema/policy.schema.json');
      return 0;
    },
  },

  'model-server': {
    summary: 'Run the bundled fake model server (OpenAI-compatible, h2c + HTTP/1.1)',
    async run(argv) {
      const { runModelServerCli } = await import('../../model-server/main.ts');
      await runModelServerCli(argv);
    },
  },
};

/** The admin plane's JSON answer, or an Error carrying its code and message (never just the status). */
export async function adminBody<T>(res: Response): Promise<T> {
  const text = await res.text();
  let body: { error?: { code?: string; message?: string } } | undefined;
  try { body = JSON.parse(text) as typeof body; } catch { /* not JSON: quote it below */ }
  if (res.ok && body) return body as T;
  const e = body?.error;
  if (e?.message) throw new Error(`admin answered ${res.status} ${e.code ?? ''}: ${e.message}`.replace(' :', ':'));
  throw new Error(`admin answered ${res.status}: ${text.slice(0, 200) || '(empty body)'}`);
}

export function printConfigErrors(file: string, e: ConfigErrors): void {
  process.stderr.write(`${file}: ${e.errors.length} problem${e.errors.length === 1 ? '' : 's'}\n`);
  for (const err of e.errors) process.stderr.write(`  ${err.describe()}\n`);
}

/** `--workers` / `server.workers`: a count, or `auto` (one per core). */
export function resolveWorkers(v: string | number): number {
  if (v === 'auto') return os.availableParallelism();
  const n = typeof v === 'number' ? v : /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new Error(`--workers must be a whole number from 1 to 256, or auto (got "${v}")`);
  return n;
}

function printBanner(file: string, a: { cleartext: string; tls?: string; admin?: string }, b: BannerInfo, model: BundledModel | undefined, semi: SemiSpacePlan, workerPids?: number[]): void {
  const auth = b.devToken ? ` \\\n  -H 'authorization: Bearer ${b.devToken}'` : '';
  const lines = [
    `ghostgate is running (config ${file}, version ${b.version})`,
    ...(workerPids ? [`  workers     ${workerPids.length} (pids ${workerPids.join(' ')}; they share the data-plane ports, the primary ${process.pid} serves the admin plane)`] : []),
    `  data plane  ${a.cleartext}  (h2c prior knowledge + HTTP/1.1)`,
    ...(a.tls ? [`  data plane  ${a.tls}  (TLS: h2 via ALPN, HTTP/1.1 fallback)`] : []),
    ...(a.admin ? [`  admin       ${a.admin}  (/_ping  /-/config  POST /-/reload  /metrics)`] : []),
    ...(model ? [`  model       ${model.url}  (bundled local model server)`] : []),
    `  upstreams   ${b.upstreams}`,
    `  node heap   young generation: ${describeSemiSpace(semi)}${workerPids ? ', in every process' : ''}`,
    ...(b.devApiKey ? [`  dev API key ${b.devApiKey}  (auth.dev: exchange it at POST /v1/token; see client/README.md)`] : []),
    '',
    'Try a streamed completion:',
    `  curl --http2-prior-knowledge -N ${a.cleartext}/v1/completions \\`,
    `  -H 'content-type: application/json'${auth} \\`,
    `  -d '{"model":"${b.model0}","prompt":"def fib(","stream":true}'`,
    '',
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

export { GatewayError };
