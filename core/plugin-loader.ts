/**
 * Plugins outside this repository, named in gateway.config.yaml:
 *
 *   plugins:
 *     - ./plugins-local/header-gate      # a folder or file, relative to the config file
 *     - ghostgate-plugin-stamp           # a package, resolved from the config file's folder
 *
 * Each is imported once per process (its code is cached like any module: a reload picks up a
 * plugin added to or removed from the list, a change to a plugin's code needs a restart). Its
 * default export must be a plugin definition (`definePlugin` from `ghostgate/plugin`), and its
 * params schema must compile. Every problem is a `GW_ERR_CONFIG_PLUGIN_LOAD` located at the
 * list entry and naming the path, so `validate` lists it and a reload keeps the last good config.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { builtinPlugins } from '../plugins/index.ts';
import { loadConfig } from './config/load.ts';
import { paramsAjv, validatorFor } from './config/validate.ts';
import type { YamlSource } from './config/yaml-source.ts';
import { ConfigErrors, GatewayError } from './errors.ts';
import type { SourceLocation } from './errors.ts';
import { describe, recordStepOrigin } from './plugin-context.ts';
import type { PluginContext, PluginDefinition, Step } from './types.ts';

const NAME = /^[a-z0-9][a-z0-9_.-]*$/;
/** Tried in this order when a plugin is named by its folder. */
const INDEX_FILES = ['index.ts', 'index.js', 'index.mjs'];

/** What the runtime needs of the loaded config to find the plugins it names. */
export interface PluginListSource {
  readonly file: string;
  readonly dir: string;
  readonly source: YamlSource;
  readonly config: { readonly plugins: readonly string[] };
}

/** Whether a `plugins:` entry is a path (else it is a package name). */
const isPath = (spec: string): boolean => spec.startsWith('.') || path.isAbsolute(spec);

/** The file to import for a `plugins:` entry; throws an Error saying why there is none. */
function entryFile(spec: string, dir: string, configFile: string): string {
  if (!isPath(spec)) {
    try {
      return createRequire(configFile).resolve(spec);
    } catch {
      throw new Error(`no package "${spec}" is installed where ${dir} can import it (npm install it next to the config)`);
    }
  }
  const full = path.resolve(dir, spec);
  if (!existsSync(full)) throw new Error(`${full} does not exist`);
  if (!statSync(full).isDirectory()) return full;
  const pkgFile = path.join(full, 'package.json');
  if (existsSync(pkgFile)) {
    const main = (JSON.parse(readFileSync(pkgFile, 'utf8')) as { main?: unknown }).main;
    if (typeof main === 'string') return path.resolve(full, main);
  }
  const index = INDEX_FILES.map((f) => path.join(full, f)).find((f) => existsSync(f));
  if (!index) throw new Error(`${full} has no ${INDEX_FILES.join(', ')} (or package.json "main")`);
  return index;
}

/** The file each plugin loaded from a `plugins:` entry came from (a definition object is imported once per process). */
const sources = new WeakMap<object, string>();

/** The file a plugin was imported from (`plugins:` entries), or `built-in`. */
export function pluginSource(def: PluginDefinition<unknown>): string {
  return sources.get(def) ?? 'built-in';
}

/** Why a module's default export is not a plugin definition, or undefined when it is one. */
function notAPlugin(def: unknown): string | undefined {
  if (def === null || typeof def !== 'object') return 'its default export is not a plugin definition (export default definePlugin({...}) from ghostgate/plugin)';
  const d = def as Partial<Record<keyof PluginDefinition, unknown>>;
  if (typeof d.name !== 'string' || !NAME.test(d.name)) return `its name ${JSON.stringify(d.name)} is not a plugin name (lower-case letters, digits, "-", "_", ".")`;
  if (typeof d.description !== 'string') return 'it has no description (a string)';
  if (d.paramsSchema === null || typeof d.paramsSchema !== 'object') return 'it has no paramsSchema (a JSON Schema object)';
  if (typeof d.create !== 'function') return 'it has no create(params, ctx) function';
  return undefined;
}

/**
 * Import the plugins the config lists. Problems are pushed to `errors` (one per entry, located at
 * it); the plugins that loaded are returned. `known` are the names already taken (built-ins).
 */
export async function loadExternalPlugins(
  loaded: PluginListSource, known: ReadonlySet<string>, errors: GatewayError[],
): Promise<PluginDefinition<unknown>[]> {
  const out: PluginDefinition<unknown>[] = [];
  const taken = new Map<string, string>();
  for (const [i, spec] of loaded.config.plugins.entries()) {
    const location = loaded.source.locate(['plugins', i]);
    const fail = (why: string): void => { errors.push(new GatewayError('GW_ERR_CONFIG_PLUGIN_LOAD', [spec, why], { location })); };
    let file: string;
    try { file = entryFile(spec, loaded.dir, loaded.file); } catch (e) { fail((e as Error).message); continue; }
    let mod: { default?: unknown };
    try {
      mod = await import(pathToFileURL(file).href) as { default?: unknown };
    } catch (e) {
      fail(`importing ${file} failed: ${e instanceof Error ? e.message : String(e)}`);
      continue;
    }
    const named = Object.keys(mod).filter((k) => k !== 'default');
    const why = mod.default === undefined
      ? `it has no default export${named.length ? ` (it exports ${named.join(', ')})` : ''}; a plugin module is \`export default definePlugin({...})\` from ghostgate/plugin`
      : notAPlugin(mod.default);
    if (why) { fail(`${file}: ${why}`); continue; }
    const def = mod.default as PluginDefinition<unknown>;
    if (known.has(def.name)) { fail(`${file}: its name "${def.name}" is a built-in plugin's; give it another name`); continue; }
    const dup = taken.get(def.name);
    if (dup !== undefined) { fail(`${file}: its name "${def.name}" is also the name of ${dup}`); continue; }
    try {
      validatorFor(paramsAjv, def.paramsSchema);
    } catch (e) {
      fail(`${file}: its paramsSchema does not compile: ${e instanceof Error ? e.message : String(e)}`);
      continue;
    }
    taken.set(def.name, spec);
    sources.set(def, file);
    out.push(def);
  }
  return out;
}

/**
 * The built-in plugins and those `configFile` names (for `ghostgate schema --config` and
 * `ghostgate plugins --config`). Throws ConfigErrors when the config or a plugin does not load.
 */
export async function pluginsOfConfig(configFile: string, env: NodeJS.ProcessEnv = process.env): Promise<ReadonlyArray<PluginDefinition<unknown>>> {
  const builtins = builtinPlugins as ReadonlyArray<PluginDefinition<unknown>>;
  const errors: GatewayError[] = [];
  const external = await loadExternalPlugins(loadConfig(configFile, env), new Set(builtins.map((p) => p.name)), errors);
  if (errors.length) throw new ConfigErrors(errors);
  return [...builtins, ...external];
}

/** Longest a plugin's `create` may take before its load is refused (it should do no I/O). */
export const CREATE_TIMEOUT_MS = 10_000;
const PHASES: ReadonlySet<string> = new Set(['request', 'forwarding', 'responseHeaders', 'responseEvent', 'done']);

/** Why what `create` returned is not a Step, or undefined when it is one. */
function notAStep(step: unknown): string | undefined {
  if (step === null || typeof step !== 'object') return `create returned ${describe(step)}, not a step (an object of phase functions: ${[...PHASES].join(', ')})`;
  for (const [k, v] of Object.entries(step)) {
    if (!PHASES.has(k)) return `create returned a step with "${k}", which is not a phase (${[...PHASES].join(', ')})`;
    if (v !== undefined && typeof v !== 'function') return `its step's ${k} is ${describe(v)}, not a function`;
  }
  return undefined;
}

/**
 * Run a plugin's `create` for one policy step, bounded: a throw or rejection that is not a
 * GatewayError, a promise that does not settle within `timeoutMs`, or a result that is not a
 * Step becomes `GW_ERR_CONFIG_PLUGIN_CREATE` at `location`, naming the plugin and its file. A
 * GatewayError (`ctx.error(...)`) is passed on as it is.
 */
export async function createStep(
  def: PluginDefinition<unknown>, params: unknown, ctx: PluginContext, location: SourceLocation, timeoutMs = CREATE_TIMEOUT_MS,
): Promise<Step> {
  const fail = (why: string): GatewayError => new GatewayError('GW_ERR_CONFIG_PLUGIN_CREATE', [def.name, pluginSource(def), why], { location });
  let step: unknown;
  let timer: NodeJS.Timeout | undefined;
  try {
    const made = def.create(params, ctx);
    step = typeof (made as Promise<Step> | undefined)?.then === 'function'
      ? await Promise.race([made, new Promise((_, reject) => { timer = setTimeout(() => reject(fail(`create did not settle within ${timeoutMs} ms (do no I/O in create)`)), timeoutMs); })])
      : made;
  } catch (e) {
    if (e instanceof GatewayError) throw e;
    throw fail(`create threw: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    clearTimeout(timer);
  }
  const why = notAStep(step);
  if (why) throw fail(why);
  recordStepOrigin(step as Step, { plugin: def.name, file: pluginSource(def) });
  return step as Step;
}
