/**
 * Auth metrics, registered once per registry (a reload compiles a new service against the same
 * registry and must reuse them). Labels are codes and fixed words, never subjects or tokens.
 */
import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import { GatewayError } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';

export interface AuthMetrics {
  /** `ghostgate_auth_failures_total{code}`. */
  readonly failures: Counter<'code'>;
  /** `ghostgate_auth_tokens_issued_total{via}` (via: api_key | oidc | mint). */
  readonly issued: Counter<'via'>;
  /** Point the cache-size gauge at the live cache. */
  setCacheSize(size: () => number): void;
}

const byRegistry = new WeakMap<Registry, AuthMetrics>();

export function authMetrics(registry: Registry): AuthMetrics {
  let m = byRegistry.get(registry);
  if (m) return m;
  const existing = <T>(name: string) => registry.getSingleMetric(name) as T | undefined;
  const failures = existing<Counter<'code'>>('ghostgate_auth_failures_total') ?? new Counter({
    name: 'ghostgate_auth_failures_total',
    help: 'Rejected tokens and credentials, by error code.',
    labelNames: ['code'],
    registers: [registry],
  });
  const issued = existing<Counter<'via'>>('ghostgate_auth_tokens_issued_total') ?? new Counter({
    name: 'ghostgate_auth_tokens_issued_total',
    help: 'Short-lived tokens issued, by credential type (api_key, oidc, mint).',
    labelNames: ['via'],
    registers: [registry],
  });
  let size: () => number = () => 0;
  if (!existing('ghostgate_auth_token_cache_entries')) {
    new Gauge({
      name: 'ghostgate_auth_token_cache_entries',
      help: 'Verified tokens currently cached.',
      registers: [registry],
      collect() { this.set(size()); },
    });
  }
  m = { failures, issued, setCacheSize(fn) { size = fn; } };
  byRegistry.set(registry, m);
  return m;
}

const BEARER_CHALLENGE = { 'www-authenticate': 'Bearer realm="ghostgate"' };
const INVALID_TOKEN_CHALLENGE = { 'www-authenticate': 'Bearer realm="ghostgate", error="invalid_token"' };

/** The GatewayError for an auth failure, with an RFC 6750 challenge on 401s. */
export function authError(code: ErrorCode, args: ReadonlyArray<string> = []): GatewayError {
  if (code === 'GW_ERR_AUTH_MISSING_TOKEN') return new GatewayError(code, args, { headers: BEARER_CHALLENGE });
  if (code.startsWith('GW_ERR_AUTH_') && code !== 'GW_ERR_AUTH_REVOKED' && code !== 'GW_ERR_AUTH_IDP_UNAVAILABLE' && code !== 'GW_ERR_AUTH_NOT_CONFIGURED') {
    return new GatewayError(code, args, { headers: INVALID_TOKEN_CHALLENGE });
  }
  return new GatewayError(code, args);
}
