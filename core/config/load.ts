/**
 * Layer one → two: read gateway.config.yaml and the policy files it names, interpolate env,
 * validate against the schemas, and return the plain validated model (with sources kept so
 * later stages can point at file:line). Every problem is collected; a ConfigErrors lists them all.
 *
 * Every read goes through a ConfigReader: the disk (`diskReader`, the default), or a snapshot of
 * the texts another load read (`recordingReader` keeps one, `snapshotReader` replays it). The
 * cluster primary loads once with a recording reader, validates, and sends the snapshot to its
 * workers, which load from it: one loader, and every worker runs the texts the primary validated.
 *
 * Why one file over 250 lines: every stage collects its problems into one ConfigErrors with file:line
 * sources; splitting the stages would pass that collector and the source map through every call.
 */
import { createHash } from 'node:crypto';
import { globSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigErrors, GatewayError } from '../errors.ts';
import type { GatewayConfig, PolicyConfig } from './model.ts';
import { gatewayConfigSchema, policySchema } from './schema.ts';
import { configAjv, validateInto, validatorFor } from './validate.ts';
import { YamlSource } from './yaml-source.ts';
import { parseDocument } from 'yaml';

export interface LoadedPolicy { readonly file: string; readonly source: YamlSource; readonly policy: PolicyConfig }

export interface LoadedConfig {
  readonly file: string;
  readonly dir: string;
  readonly source: YamlSource;
  readonly config: GatewayConfig;
  readonly policies: readonly LoadedPolicy[];
  /** Hash of every file's text: a reload with nothing changed is a no-op. */
  readonly fingerprint: string;
  /** Secret and list files the config refers to (watched for hot reload). */
  readonly watchFiles: readonly string[];
}

const validateGateway = validatorFor(configAjv, gatewayConfigSchema);
const validatePolicy = validatorFor(configAjv, policySchema());

/**
 * Every file access of a config load. What it covers: the main file, the `policies:` patterns
 * and the policy files they match. What it does not: the contents of secret and list files
 * (`{file: path}`: API keys, credentials, certificates, deny and revocation lists) and external
 * plugin modules, which the runtime reads itself (core/secrets.ts, core/plugin-loader.ts) in
 * each process that builds one. Secrets stay out of the snapshot so that a credential is never
 * copied into IPC messages, and a rotated one (a mounted secret, a renewed certificate) is what a
 * newly started worker reads; a plugin module is code with imports of its own, loaded by Node's
 * module loader, not a text. The snapshot holds each secret file's digest, so the fingerprint
 * (and "unchanged") is the same in every process that loads it.
 */
export interface ConfigReader {
  /** A file's text (UTF-8); throws an error with a `code` (ENOENT…) when there is none. */
  read(file: string): string;
  /** The files a `policies:` pattern matches, relative to `cwd` (`fs.globSync`'s answer). */
  glob(pattern: string, cwd: string): string[];
  /** SHA-256 (hex) of a secret or list file the config names, undefined when it cannot be read. */
  digest(file: string): string | undefined;
}

/**
 * What a load read, exactly: enough for `snapshotReader` to load the same config in another
 * process without the disk. Plain JSON (it travels over the cluster's IPC channel).
 */
export interface ConfigSnapshot {
  /** Text of every YAML file read (the main file, each policy file), by absolute path. */
  files: Record<string, string>;
  /** Each `policies:` pattern's matches, by `cwd + "\0" + pattern`. */
  globs: Record<string, string[]>;
  /** SHA-256 of each secret or list file, by absolute path (null: could not be read). */
  digests: Record<string, string | null>;
}

/** Reads the disk. */
export const diskReader: ConfigReader = {
  read: (file) => readFileSync(file, 'utf8'),
  glob: (pattern, cwd) => globSync(pattern, { cwd }),
  digest: (file) => { try { return createHash('sha256').update(readFileSync(file)).digest('hex'); } catch { return undefined; } },
};

/** Reads the disk and keeps every answer in `snapshot`. One reader per load. */
export function recordingReader(): ConfigReader & { readonly snapshot: ConfigSnapshot } {
  const snapshot: ConfigSnapshot = { files: {}, globs: {}, digests: {} };
  return {
    snapshot,
    read(file) { return (snapshot.files[file] ??= diskReader.read(file)); },
    glob(pattern, cwd) { return (snapshot.globs[`${cwd}\0${pattern}`] ??= diskReader.glob(pattern, cwd)); },
    digest(file) { const d = diskReader.digest(file); snapshot.digests[file] = d ?? null; return d; },
  };
}

/**
 * Answers from a snapshot, never the disk. A file the snapshot does not hold reads as ENOENT:
 * the load that made it did not read that file (only if the two processes' environments make the
 * same texts name different files).
 */
export function snapshotReader(s: ConfigSnapshot): ConfigReader {
  const missing = (what: string): Error => Object.assign(new Error(`${what} is not in the config snapshot`), { code: 'ENOENT (not in the config snapshot)' });
  return {
    read(file) { const t = s.files[file]; if (t === undefined) throw missing(file); return t; },
    glob(pattern, cwd) { const m = s.globs[`${cwd}\0${pattern}`]; if (m === undefined) throw missing(`pattern ${pattern}`); return [...m]; },
    digest(file) { return s.digests[file] ?? undefined; },
  };
}

/** Load and validate; throws ConfigErrors listing every problem found. */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env, reader: ConfigReader = diskReader): LoadedConfig {
  const st = loadConfigStaged(file, env, reader);
  if (st.errors.length) throw new ConfigErrors(st.errors);
  return st.loaded!;
}

export interface StagedLoad {
  /**
   * Every problem, by stage: YAML (and env) errors of every file, then schema errors of every
   * file, then references (between sections, policy → model).
   */
  errors: GatewayError[];
  /**
   * The config when the main file passed its own stages: with the policy files that passed
   * theirs (all of them when `errors` is empty). `validate` builds a runtime from it to find the
   * next stage's problems (plugins, params, conditions, secrets) in the same run.
   */
  loaded: LoadedConfig | undefined;
  /** Policy files that parsed and match the schema (for step checks when the main config failed). */
  policies: LoadedPolicy[];
  /**
   * The `plugins:` list as far as it reads, when the main file parsed (for step checks when the
   * main config failed: steps that use a listed plugin are checked against it, not called unknown).
   */
  pluginList: { file: string; dir: string; source: YamlSource; config: { plugins: string[] } } | undefined;
  /**
   * The main file's value when it parsed, schema-valid or not (what it declares for steps to
   * refer to when the main config failed: core/step-check.ts declaredIn).
   */
  mainValue: unknown;
}

/** Load every file as far as it goes, collecting each stage's problems (never stops at the first file). */
export function loadConfigStaged(file: string, env: NodeJS.ProcessEnv = process.env, reader: ConfigReader = diskReader): StagedLoad {
  const yamlErrors: GatewayError[] = [];
  const schemaErrors: GatewayError[] = [];
  const refErrors: GatewayError[] = [];
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  const source = YamlSource.read(abs, yamlErrors, env, reader.read);
  let config: GatewayConfig | undefined;
  let patterns: string[] = [];
  let pluginList: StagedLoad['pluginList'];
  let mainValue: unknown;
  if (source) {
    const value = source.value() ?? {};
    mainValue = value;
    if (typeof value !== 'object' || Array.isArray(value)) {
      schemaErrors.push(new GatewayError('GW_ERR_CONFIG_SCHEMA', ['the config must be a YAML mapping'], { location: { file: abs, line: 1 } }));
    } else {
      const raw = (value as { policies?: unknown }).policies;
      const rawPlugins = (value as { plugins?: unknown }).plugins;
      const plugins = Array.isArray(rawPlugins) ? rawPlugins.filter((x): x is string => typeof x === 'string') : [];
      pluginList = { file: abs, dir, source, config: { plugins } };
      if (validateInto(validateGateway, value, source, abs, schemaErrors)) {
        config = value as GatewayConfig;
        checkGateway(config, source, refErrors);
        patterns = config.policies;
      } else {
        // The policies are still checked, as far as the list of them can be read.
        patterns = raw === undefined ? defaultPolicies() : Array.isArray(raw) ? raw.filter((x): x is string => typeof x === 'string') : [];
      }
    }
  } else if (!yamlErrors.some((e) => e.code === 'GW_ERR_CONFIG_READ')) {
    // A YAML error in the main file: check the policy files it names if that part parses.
    patterns = policiesOfBrokenYaml(abs, reader);
  }

  const hash = createHash('sha256').update(source?.text ?? '');
  const policies: LoadedPolicy[] = [];
  for (const [i, pattern] of patterns.entries()) {
    let matches: string[];
    try {
      matches = reader.glob(pattern, dir).sort();
    } catch (e) {
      yamlErrors.push(new GatewayError('GW_ERR_CONFIG_READ', [pattern, (e as NodeJS.ErrnoException).code ?? String(e)], { location: source ? source.locate(['policies', i]) : { file: abs } }));
      continue;
    }
    if (matches.length === 0 && !/[*?[]/.test(pattern)) {
      yamlErrors.push(new GatewayError('GW_ERR_CONFIG_READ', [pattern, 'no such file'], { location: source ? source.locate(['policies', i]) : { file: abs } }));
    }
    for (const rel of matches) {
      const pfile = path.resolve(dir, rel);
      const psrc = YamlSource.read(pfile, yamlErrors, env, reader.read);
      if (!psrc) continue;
      hash.update('\0').update(pfile).update('\0').update(psrc.text);
      const pv = psrc.value();
      if (pv === null || pv === undefined) continue; // an empty file is no policy
      if (!validateInto(validatePolicy, pv, psrc, pfile, schemaErrors)) continue;
      const policy = pv as PolicyConfig;
      if (policies.some((p) => p.policy.name === policy.name)) {
        refErrors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [`policy name "${policy.name}" is used twice`], { location: psrc.locate(['name']) }));
      }
      if (config) {
        for (const [j, m] of (policy.match.models ?? []).entries()) {
          if (!modelKnown(config, m)) refErrors.push(new GatewayError('GW_ERR_CONFIG_UNKNOWN_MODEL', [m], { location: psrc.locate(['match', 'models', j]) }));
        }
      }
      policies.push({ file: pfile, source: psrc, policy });
    }
  }
  const errors = [...yamlErrors, ...schemaErrors, ...refErrors];
  if (!config || !source || yamlErrors.some((e) => e.location?.file === abs) || refErrors.some((e) => e.location?.file === abs)) {
    return { errors, loaded: undefined, policies, pluginList, mainValue };
  }
  // Files the config reads secrets or lists from (API keys, deny lists…): a change reloads too.
  const watchFiles = new Set<string>();
  for (const f of fileRefs(config)) {
    const full = path.resolve(dir, f);
    watchFiles.add(full);
    // A file that cannot be read is reported by the runtime.
    hash.update('\0').update(full).update('\0').update(reader.digest(full) ?? '');
  }
  return { errors, policies, pluginList, mainValue, loaded: { file: abs, dir, source, config, policies, fingerprint: hash.digest('hex'), watchFiles: [...watchFiles] } };
}

function defaultPolicies(): string[] {
  return [...gatewayConfigSchema.properties.policies.default];
}

/** The `policies:` list of a config file whose YAML has an error elsewhere, if that part reads. */
function policiesOfBrokenYaml(file: string, reader: ConfigReader): string[] {
  try {
    const v = parseDocument(reader.read(file)).toJS() as { policies?: unknown } | null;
    const raw = v && typeof v === 'object' ? v.policies : undefined;
    if (raw === undefined) return defaultPolicies();
    return Array.isArray(raw) ? raw.filter((x): x is string => typeof x === 'string' && !x.includes('${')) : [];
  } catch {
    return [];
  }
}

/** Every `{file: path}` reference in the config. */
function fileRefs(v: unknown, out: string[] = []): string[] {
  if (Array.isArray(v)) for (const x of v) fileRefs(x, out);
  else if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (typeof o.file === 'string') out.push(o.file);
    for (const x of Object.values(o)) fileRefs(x, out);
  }
  return out;
}

function modelKnown(c: GatewayConfig, name: string): boolean {
  return name in c.models || Object.values(c.models).some((m) => m.aliases.includes(name));
}

/** 127.0.0.0/8, ::1 (also IPv4-mapped) and `localhost`; any other name counts as reachable from outside. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Paths the gateway answers itself: a passthrough entry may not take them (or a path under them). */
const OWN_PATHS = ['/v1/completions', '/v1/chat/completions', '/v1/engines', '/v1/token', '/v1/models', '/.well-known', '/copilot_internal', '/models', '/telemetry'];

/** `passthrough:` entries: a known upstream, a path of their own, auth unless said otherwise. */
function checkPassthrough(c: GatewayConfig, src: YamlSource, errors: GatewayError[]): void {
  const seen = new Set<string>();
  c.passthrough.forEach((p, i) => {
    const at = (k: string) => src.locate(['passthrough', String(i), k]);
    if (!(p.upstream in c.upstreams)) errors.push(new GatewayError('GW_ERR_CONFIG_UNKNOWN_UPSTREAM', [p.upstream], { location: at('upstream') }));
    const own = OWN_PATHS.find((o) => p.path === o || p.path.startsWith(o + '/') || o.startsWith(p.path + '/'));
    if (own) errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [`passthrough path ${p.path} overlaps ${own}, which the gateway answers itself`], { location: at('path') }));
    const dup = [...seen].find((o) => p.path === o || p.path.startsWith(o + '/') || o.startsWith(p.path + '/'));
    if (dup) errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [`passthrough path ${p.path} overlaps another entry's ${dup}`], { location: at('path') }));
    seen.add(p.path);
    if (p.auth && c.auth === undefined) {
      errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [`passthrough ${p.path} requires a gateway token but there is no auth: section; configure auth (docs/auth.md), or set auth: false on this entry to forward unauthenticated requests with the upstream's credential`], { location: at('path') }));
    }
  });
}

/** Checks the schema cannot express: references between sections, derived defaults. */
function checkGateway(c: GatewayConfig, src: YamlSource, errors: GatewayError[]): void {
  for (const [name, u] of Object.entries(c.upstreams)) {
    u.protocol ??= u.url.startsWith('https:') ? 'h2' : 'h2c';
    u.pool.size ??= u.protocol === 'http1' ? 64 : 2;
    if (u.protocol === 'h2' && !u.url.startsWith('https:')) {
      errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [`upstream "${name}": protocol h2 needs an https:// url (use h2c for cleartext)`], { location: src.locate(['upstreams', name, 'protocol']) }));
    }
    if (u.protocol === 'h2c' && u.url.startsWith('https:')) {
      errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [`upstream "${name}": protocol h2c needs an http:// url`], { location: src.locate(['upstreams', name, 'protocol']) }));
    }
    try { new URL(u.url); } catch {
      errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [`upstream "${name}": url is not a valid URL`], { location: src.locate(['upstreams', name, 'url']) }));
    }
  }
  const names = new Map<string, string>();
  for (const [name, m] of Object.entries(c.models)) {
    if ((m.deployments === undefined) === (m.upstream === undefined)) {
      errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [`model "${name}": give either upstream or deployments (exactly one)`], { location: src.locate(['models', name]) }));
      continue;
    }
    if (m.deployments !== undefined) {
      const seen = new Set<string>();
      for (const [i, d] of m.deployments.entries()) {
        d.model ??= m.upstreamModel ?? name;
        if (!(d.upstream in c.upstreams)) {
          errors.push(new GatewayError('GW_ERR_CONFIG_UNKNOWN_UPSTREAM', [d.upstream], { location: src.locate(['models', name, 'deployments', i, 'upstream']) }));
        }
        const id = `${d.upstream}\0${d.model}`;
        if (seen.has(id)) errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [`model "${name}": deployment ${d.upstream}/${d.model} is listed twice`], { location: src.locate(['models', name, 'deployments', i]) }));
        seen.add(id);
      }
      // What a request's route names until a deployment is picked: the preferred one.
      m.upstream = [...m.deployments].sort((a, b) => a.priority - b.priority)[0]!.upstream;
      if (m.failover.ejection.maxMs < m.failover.ejection.baseMs) {
        errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [`model "${name}": failover.ejection.maxMs must be at least baseMs`], { location: src.locate(['models', name, 'failover', 'ejection', 'maxMs']) }));
      }
    } else if (!(m.upstream in c.upstreams)) {
      errors.push(new GatewayError('GW_ERR_CONFIG_UNKNOWN_UPSTREAM', [m.upstream], { location: src.locate(['models', name, 'upstream']) }));
    }
    for (const n of [name, ...m.aliases]) {
      const prev = names.get(n);
      if (prev !== undefined) errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [`model name "${n}" is used by both "${prev}" and "${name}"`], { location: src.locate(['models', name]) }));
      names.set(n, name);
    }
  }
  if (c.defaultModel !== undefined && !names.has(c.defaultModel)) {
    errors.push(new GatewayError('GW_ERR_CONFIG_UNKNOWN_MODEL', [c.defaultModel], { location: src.locate(['defaultModel']) }));
  }
  if (c.admin.enabled && !c.admin.credential && !c.admin.insecureAllowNoCredential && !isLoopback(c.admin.host)) {
    errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [
      `admin.host ${c.admin.host} is not a loopback address and admin.credential is not set: anyone who reaches it could reload the config or mint tokens. Set admin.credential ({env: NAME} or {file: path}), or admin.insecureAllowNoCredential: true`,
    ], { location: src.locate(['admin', 'host']) }));
  }
  const storeUrl = c.store.redis?.url;
  if (typeof storeUrl === 'string' && src.envNames(['store', 'redis', 'url']).length === 0 && /^[^/]*\/\/[^/@]*:[^/@]*@/.test(storeUrl)) {
    errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [
      'store.redis.url carries a password written in the YAML: secrets come from the environment or a file (url: ${REDIS_URL}, {env: NAME} or {file: path})',
    ], { location: src.locate(['store', 'redis', 'url']) }));
  }
  checkPassthrough(c, src, errors);
  if (c.health.recoverAt !== undefined && c.health.recoverAt < c.health.slo) {
    errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', ['health.recoverAt must be at least health.slo'], { location: src.locate(['health', 'recoverAt']) }));
  }
}
