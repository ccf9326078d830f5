/**
 * Secrets are named in config (`{env: NAME}` or `{file: path}`) and read here; their values
 * never go into config dumps, logs, errors or metrics. Errors name the variable or file only.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { GatewayError } from './errors.ts';
import type { SecretRef } from './config/model.ts';

export function secretReader(configDir: string, env: NodeJS.ProcessEnv = process.env): (ref: SecretRef) => string {
  return (ref) => {
    if ('env' in ref) {
      const v = env[ref.env];
      if (v === undefined || v === '') throw new GatewayError('GW_ERR_CONFIG_SECRET', [`env ${ref.env}`, 'the variable is not set']);
      return v.trim();
    }
    const file = path.resolve(configDir, ref.file);
    try {
      return readFileSync(file, 'utf8').trim();
    } catch (e) {
      throw new GatewayError('GW_ERR_CONFIG_SECRET', [`file ${ref.file}`, (e as NodeJS.ErrnoException).code ?? 'unreadable']);
    }
  };
}

/** Keys whose string values are secrets if anyone ever writes one inline (refs are objects). */
const SECRET_KEYS = /^(key|secret|password|token|apikey|api_key|privatekey|authorization|credential|value)$/i;

/** A copy of `value` with every secret reference kept as a reference and nothing else touched. */
export function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redact);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_KEYS.test(k) && typeof v === 'string' ? '[redacted]' : typeof v === 'string' ? redactUrl(v) : redact(v);
  }
  return out;
}

/** A URL's password (`scheme://user:password@host`) replaced by `[redacted]`; any other string as is. */
export function redactUrl(s: string): string {
  return s.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*:)[^/@]*@/i, '$1[redacted]@');
}
