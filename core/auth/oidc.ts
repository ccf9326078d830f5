/**
 * An identity provider's JWT as the long-lived credential. The JWKS is fetched by jose's
 * `createRemoteJWKSet` (cached for `cacheMaxAgeMs`, refetched on an unknown kid at most once per
 * `cooldownMs`, each fetch bounded by `timeoutMs`) and the fetcher survives reloads while the
 * IdP settings are unchanged. An IdP that is down or slow fails the exchange with
 * GW_ERR_AUTH_IDP_UNAVAILABLE within the timeout; our own tokens never depend on it.
 */
import { createRemoteJWKSet, errors as joseErrors, jwtVerify } from 'jose';
import type { JWTPayload } from 'jose';
import type { OidcConfig } from './config.ts';

export type OidcFailure = 'unavailable' | 'invalid';

/** Thrown by `OidcVerifier.verify`: `kind` maps to an error code, `reason` is for logs. */
export class OidcError extends Error {
  readonly kind: OidcFailure;
  readonly reason: string;
  constructor(kind: OidcFailure, reason: string) {
    super(`oidc ${kind}: ${reason}`);
    this.name = 'OidcError';
    this.kind = kind;
    this.reason = reason;
  }
}

type JwksGetter = ReturnType<typeof createRemoteJWKSet>;

/** JOSE error codes that say "the IdP could not be reached or served garbage", not "bad token". */
const UNAVAILABLE = new Set(['ERR_JWKS_TIMEOUT', 'ERR_JWKS_INVALID', 'ERR_JOSE_GENERIC']);

export class OidcVerifier {
  /** Settings that, when equal, let a reload keep this verifier's JWKS cache. */
  readonly fetcherKey: string;
  readonly #cfg: OidcConfig;
  readonly #skew: number;
  readonly #jwks: JwksGetter;

  constructor(cfg: OidcConfig, skew: number, previous?: OidcVerifier) {
    this.#cfg = cfg;
    this.#skew = skew;
    this.fetcherKey = JSON.stringify([cfg.jwksUri, cfg.timeoutMs, cfg.cooldownMs, cfg.cacheMaxAgeMs]);
    this.#jwks = previous && previous.fetcherKey === this.fetcherKey
      ? previous.#jwks
      : createRemoteJWKSet(new URL(cfg.jwksUri), { timeoutDuration: cfg.timeoutMs, cooldownDuration: cfg.cooldownMs, cacheMaxAge: cfg.cacheMaxAgeMs });
  }

  get subjectClaim(): string { return this.#cfg.subjectClaim; }

  /** Verify an IdP token; resolves to its payload or rejects with an OidcError. */
  async verify(token: string): Promise<JWTPayload> {
    let timer: NodeJS.Timeout | undefined;
    // jose bounds each fetch; this bounds the whole verification (a fetch already in flight).
    const deadline = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new OidcError('unavailable', 'timeout')), this.#cfg.timeoutMs + 250);
    });
    try {
      const { payload } = await Promise.race([
        jwtVerify(token, this.#jwks, {
          issuer: this.#cfg.issuer,
          audience: this.#cfg.audience,
          algorithms: this.#cfg.algorithms,
          clockTolerance: this.#skew,
        }),
        deadline,
      ]);
      return payload;
    } catch (e) {
      throw classify(e);
    } finally {
      clearTimeout(timer);
    }
  }
}

function classify(e: unknown): OidcError {
  if (e instanceof OidcError) return e;
  if (e instanceof joseErrors.JOSEError) {
    if (UNAVAILABLE.has(e.code)) return new OidcError('unavailable', e.code);
    return new OidcError('invalid', e.code);
  }
  // fetch failures (connection refused, DNS, abort) are TypeErrors/DOMExceptions, not JOSE errors.
  const name = e instanceof Error ? e.name : 'unknown';
  return new OidcError('unavailable', name);
}
