/**
 * The `auth:` section as a typed model: schema-validated (defaults applied) and durations
 * turned into seconds. Layer two of three (YAML → this → the compiled AuthService).
 */
import { Ajv } from 'ajv';
import type { ValidateFunction } from 'ajv';
import { GatewayError } from '../errors.ts';
import type { FromSchema } from 'json-schema-to-ts';
import { authConfigSchema } from './schema.ts';

export type SecretRef = { env: string } | { file: string };

/** The section as its schema types it (defaults applied; durations still as written). */
type SchemaAuth = FromSchema<typeof authConfigSchema>;
type Flat<T> = { [K in keyof T]: T[K] };

export type TokenAlg = SchemaAuth['algorithms'][number];
export type SigningKeyConfig = SchemaAuth['signingKeys'][number];
export type OidcConfig = NonNullable<SchemaAuth['credentials']['oidc']>;

/** The `auth:` section, derived from its schema, with `tokenTtl` and `refreshBefore` in seconds. */
export type AuthConfig = Flat<Omit<SchemaAuth, 'tokenTtl' | 'refreshBefore'> & {
  /** Seconds. */
  tokenTtl: number;
  /** Seconds. */
  refreshBefore: number;
}>;

/** Longest lifetime of a configured token (tokens are meant to be short-lived). */
export const MAX_TOKEN_TTL = 24 * 3600;
/** Longest lifetime `mint()` accepts (the CLI may mint a long dev token). */
export const MAX_MINT_TTL = 7 * 24 * 3600;

const UNIT: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** `90` / `"90"` / `"90s"` / `"30m"` / `"1h"` / `"1d"` → seconds; undefined if not a duration. */
export function parseDuration(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isInteger(v) && v > 0 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const m = /^([0-9]+)(s|m|h|d)?$/.exec(v.trim());
  if (!m) return undefined;
  const n = Number(m[1]) * UNIT[m[2] ?? 's'];
  return n > 0 && Number.isSafeInteger(n) ? n : undefined;
}

/** A config error located in the `auth` section (never carries secret material). */
export function authConfigError(path: string, message: string): GatewayError {
  const at = path ? `auth.${path}` : 'auth';
  return new GatewayError('GW_ERR_CONFIG_INVALID', [`${at}: ${message}`], { location: { file: 'gateway.config.yaml', path: at } });
}

let validate: ValidateFunction | undefined;

/** Validate (defaults applied, on a copy) and normalize the `auth:` section. Throws GW_ERR_CONFIG_SCHEMA / _INVALID. */
export function normalizeAuthConfig(raw: Record<string, unknown>): AuthConfig {
  validate ??= new Ajv({ allErrors: true, useDefaults: true, coerceTypes: true, strict: false }).compile(authConfigSchema);
  const data = structuredClone(raw ?? {}) as Record<string, unknown>;
  if (!validate(data)) {
    const first = validate.errors?.[0];
    const at = first?.instancePath ? first.instancePath.slice(1).replace(/\//g, '.') : '';
    throw new GatewayError('GW_ERR_CONFIG_SCHEMA', [`auth${at ? `.${at}` : ''}: ${first?.message ?? 'invalid'}`], {
      location: { file: 'gateway.config.yaml', path: `auth${at ? `.${at}` : ''}` },
    });
  }
  const cfg = data as unknown as AuthConfig & { tokenTtl: unknown; refreshBefore: unknown };
  const ttl = parseDuration(cfg.tokenTtl);
  if (ttl === undefined || ttl < 10 || ttl > MAX_TOKEN_TTL) throw authConfigError('tokenTtl', `must be a duration between 10s and 24h (got ${JSON.stringify(cfg.tokenTtl)})`);
  const refresh = parseDuration(cfg.refreshBefore);
  if (refresh === undefined) throw authConfigError('refreshBefore', `must be a duration (got ${JSON.stringify(cfg.refreshBefore)})`);
  return { ...cfg, tokenTtl: ttl, refreshBefore: refresh };
}

/** Seconds after issue when a client should refresh: ttl − refreshBefore, at least half the ttl. */
export function refreshIn(ttl: number, refreshBefore: number): number {
  return Math.max(ttl - refreshBefore, Math.ceil(ttl / 2));
}
