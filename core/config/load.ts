/**
 * Layer one → two: read gateway.config.yaml and the policy files it names, interpolate env,
 * validate against the schemas, and return the plain validated model (with sources kept so
 * later stages can point at file:line). Every problem is collected; a ConfigErrors lists them all.
 */
import { createHash } from 'node:crypto';
import { globSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigErrors, GatewayError } from '../errors.ts';
import type { GatewayConfig, PolicyConfig } from './model.ts';
import { gatewayConfigSchema, policySchema } from './schema.ts';
import { configAjv, validateInto, validatorFor } from './validate.ts';
import { YamlSource } from './yaml-source.ts';

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

/** Load and validate; throws ConfigErrors listing every problem found. */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const errors: GatewayError[] = [];
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  const source = YamlSource.read(abs, errors, env);
  if (!source) throw new ConfigErrors(errors);
  const value = source.value() ?? {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigErrors([new GatewayError('GW_ERR_CONFIG_SCHEMA', ['the config must be a YAML mapping'], { location: { file: abs, line: 1 } })]);
  }
  if (!validateInto(validateGateway, value, source, abs, errors)) throw new ConfigErrors(errors);
  const config = value as GatewayConfig;
  checkGateway(config, source, errors);

  const hash = createHash('sha256').update(source.text);
  const policies: LoadedPolicy[] = [];
  for (const pattern of config.policies) {
    const matches = globSync(pattern, { cwd: dir }).sort();
    if (matches.length === 0 && !/[*?[]/.test(pattern)) {
      errors.push(new GatewayError('GW_ERR_CONFIG_READ', [pattern, 'no such file'], { location: source.locate(['policies', config.policies.indexOf(pattern)]) }));
    }
    for (const rel of matches) {
      const pfile = path.resolve(dir, rel);
      const psrc = YamlSource.read(pfile, errors, env);
      if (!psrc) continue;
      hash.update('\0').update(pfile).update('\0').update(psrc.text);
      const pv = psrc.value();
      if (pv === null || pv === undefined) continue; // an empty file is no policy
      if (!validateInto(validatePolicy, pv, psrc, pfile, errors)) continue;
      const policy = pv as PolicyConfig;
      if (policies.some((p) => p.policy.name === policy.name)) {
        errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [`policy name "${policy.name}" is used twice`], { location: psrc.locate(['name']) }));
      }
      for (const [i, m] of (policy.match.models ?? []).entries()) {
        if (!modelKnown(config, m)) errors.push(new GatewayError('GW_ERR_CONFIG_UNKNOWN_MODEL', [m], { location: psrc.locate(['match', 'models', i]) }));
      }
      policies.push({ file: pfile, source: psrc, policy });
    }
  }
  if (errors.length) throw new ConfigErrors(errors);
  // Files the config reads secrets or lists from (API keys, deny lists…): a change reloads too.
  const watchFiles = new Set<string>();
  for (const f of fileRefs(config)) {
    const full = path.resolve(dir, f);
    watchFiles.add(full);
    try { hash.update('\0').update(full).update('\0').update(readFileSync(full)); } catch { /* reported by the runtime */ }
  }
  return { file: abs, dir, source, config, policies, fingerprint: hash.digest('hex'), watchFiles: [...watchFiles] };
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
    if (!(m.upstream in c.upstreams)) {
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
  if (c.health.recoverAt !== undefined && c.health.recoverAt < c.health.slo) {
    errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', ['health.recoverAt must be at least health.slo'], { location: src.locate(['health', 'recoverAt']) }));
  }
}
