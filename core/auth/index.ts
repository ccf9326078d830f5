/**
 * Auth: token exchange (long-lived credential → short-lived token), token verification for the
 * `auth` step, the public JWKS, and minting for the CLI and dev mode. `compileAuth` builds an
 * immutable service per config load; everything expensive (keys, hashes, JWKS fetcher, the
 * verified-token cache) is built at load or carried over from the previous service.
 *
 * Why one file over 250 lines: it is the one AuthService (verify with its cache and in-flight
 * map, exchange, mint, and the failure counting they share) plus compileAuth, which wires it.
 *
 * @example
 *   const auth = await compileAuth(config.auth, { configDir, log, metrics, readSecret });
 *   const { token } = await auth.mint({ sub: 'alice', plan: 'pro' });
 *   await auth.verify(token); // → claims, or throws GatewayError GW_ERR_AUTH_*
 */
import type { Registry } from 'prom-client';
import { GatewayError } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';
import type { AuthRuntime, JsonValue, Logger } from '../types.ts';
import { ApiKeyStore, generateApiKey } from './api-keys.ts';
import { bearerToken } from './bearer.ts';
import { TokenCache } from './cache.ts';
import { MAX_MINT_TTL, normalizeAuthConfig, refreshIn } from './config.ts';
import type { AuthConfig, SecretRef } from './config.ts';
import type { CachedToken } from './cache.ts';
import { newJti, signJwt, TokenFailure, verifyJwt } from './jwt.ts';
import { deepFreeze } from '../safe-object.ts';
import type { VerifyRules } from './jwt.ts';
import { importKeys, loadKeys, sharedDevApiKey } from './keys.ts';
import type { ImportedKey, KeySet } from './keys.ts';
import { authError, authMetrics } from './metrics.ts';
import type { AuthMetrics } from './metrics.ts';
import { OidcError, OidcVerifier } from './oidc.ts';
import { loadRevocation } from './revocation.ts';
import type { Revocation } from './revocation.ts';
import { resolve } from 'node:path';
import { RESERVED_CLAIMS } from './schema.ts';

export { authConfigSchema } from './schema.ts';
export { generateApiKey, hashApiKey } from './api-keys.ts';
export { bearerToken } from './bearer.ts';
export { authMetrics } from './metrics.ts';

export interface AuthDeps {
  configDir: string;
  log: Logger;
  metrics: Registry;
  /** Throws GatewayError GW_ERR_CONFIG_SECRET. Files are relative to configDir. */
  readSecret(ref: { env: string } | { file: string }): string;
  /** Clock in ms (default Date.now); tests move it to check expiry. */
  now?: () => number;
}

export type TokenResponse = {
  token: string;
  /** Seconds since the epoch. */
  expires_at: number;
  /** Seconds from now after which the client should get a new token. */
  refresh_in: number;
  token_type: 'Bearer';
};

export interface AuthService extends AuthRuntime {
  /**
   * Verify one of our tokens: claims (deep-frozen) or a GatewayError GW_ERR_AUTH_*. A token seen
   * before (cached) is answered synchronously: the claims are returned, or the error thrown (too
   * large, expired, revoked), with no promise. A token's first sight returns a promise (jose
   * verifies the signature) that resolves to the claims or rejects with the error; concurrent
   * first sights of one token share one verification.
   */
  verify(token: string): Readonly<Record<string, unknown>> | Promise<Readonly<Record<string, unknown>>>;
  /** POST /v1/token on the data plane. Returns the JSON body; throws GatewayError (coded) on failure. */
  exchange(input: { headers: Record<string, string | string[] | undefined>; body: unknown; ip: string }): Promise<TokenResponse>;
  /** GET /.well-known/jwks.json: public keys of every verification key. */
  jwks(): { keys: object[] };
  /** Mint a token directly (CLI `ghostgate token`, and the dev token printed by `npm start`). */
  mint(claims: { sub: string; [k: string]: unknown }, ttlSeconds?: number): Promise<{ token: string; expires_at: number }>;
  close(): void;
  /** Absolute paths of the files this service read (keys, API keys, deny list): worth watching for reload. */
  readonly files: readonly string[];
  /** True when signing with the dev-mode in-memory key (its tokens verify only in this process). */
  readonly ephemeral: boolean;
  /**
   * Dev mode (`auth.dev: true`) with no credentials configured: an API key generated at load
   * (kept across reloads, not restarts) that `POST /v1/token` exchanges for a token with
   * `sub: dev`, so the token exchange works out of the box. Undefined outside dev mode.
   */
  readonly devApiKey: string | undefined;
}

interface Internals {
  keys: KeySet;
  cache: TokenCache;
  cacheKey: string;
  oidc: OidcVerifier | undefined;
  /** A successor service took over the cache: close() must not clear it. */
  adopted: boolean;
  devApiKey: string | undefined;
}

const internals = new WeakMap<AuthService, Internals>();
const RESERVED = new Set<string>([...RESERVED_CLAIMS, 'sub']);
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

function refDescription(ref: SecretRef): string {
  return 'env' in ref ? `env:${ref.env}` : ref.file;
}

class GatewayAuthService implements AuthService {
  readonly files: readonly string[];
  readonly ephemeral: boolean;
  readonly devApiKey: string | undefined;
  readonly #cfg: AuthConfig;
  readonly #keys: KeySet;
  readonly #rules: VerifyRules;
  readonly #cache: TokenCache;
  readonly #revocation: Revocation;
  readonly #apiKeys: ApiKeyStore | undefined;
  readonly #oidc: OidcVerifier | undefined;
  readonly #metrics: AuthMetrics;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #maxBytes: number;
  readonly #skew: number;
  readonly #signer: ImportedKey | undefined;
  /** First sights being verified, by token: concurrent requests with one new token share one verification. */
  readonly #inflight = new Map<string, Promise<CachedToken | TokenFailure>>();

  constructor(o: {
    cfg: AuthConfig; keys: KeySet; cache: TokenCache; revocation: Revocation; apiKeys: ApiKeyStore | undefined;
    oidc: OidcVerifier | undefined; metrics: AuthMetrics; log: Logger; now: () => number; files: string[]; devApiKey: string | undefined;
    imported: { verify: ReadonlyMap<string, ImportedKey>; signer: ImportedKey | undefined };
  }) {
    this.devApiKey = o.devApiKey;
    this.#cfg = o.cfg;
    this.#keys = o.keys;
    this.#cache = o.cache;
    this.#revocation = o.revocation;
    this.#apiKeys = o.apiKeys;
    this.#oidc = o.oidc;
    this.#metrics = o.metrics;
    this.#log = o.log;
    this.#now = o.now;
    this.#maxBytes = o.cfg.maxTokenBytes;
    this.#skew = o.cfg.clockSkewSeconds;
    this.#signer = o.imported.signer;
    this.#rules = { keys: o.imported.verify, algorithms: new Set(o.cfg.algorithms), issuer: o.cfg.issuer, audience: o.cfg.audience, skew: o.cfg.clockSkewSeconds };
    this.files = Object.freeze(o.files);
    this.ephemeral = o.keys.ephemeral;
    deepFreeze(o.keys.jwks);
  }

  #fail(code: ErrorCode, arg?: string): never {
    this.#metrics.failures.inc({ code });
    throw authError(code, arg === undefined ? [] : [arg]);
  }

  /** Verify one of our tokens (a cache hit is synchronous: a Map lookup and two comparisons). */
  verify(token: string): Readonly<Record<string, unknown>> | Promise<Readonly<Record<string, unknown>>> {
    if (token.length > this.#maxBytes) this.#fail('GW_ERR_AUTH_TOKEN_TOO_LARGE');
    const nowSec = this.#now() / 1000;
    const hit = this.#cache.get(token);
    if (hit !== undefined) {
      if (nowSec >= hit.exp + this.#skew) {
        this.#cache.delete(token);
        this.#fail('GW_ERR_AUTH_TOKEN_EXPIRED');
      }
      if (this.#revocation.active && this.#revocation.has(hit.sub, hit.jti)) this.#fail('GW_ERR_AUTH_REVOKED');
      return hit.claims;
    }
    let pending = this.#inflight.get(token);
    if (pending === undefined) {
      pending = this.#firstSight(token, nowSec);
      this.#inflight.set(token, pending);
    }
    // Each request counts its own failure (the shared verification only computes the verdict).
    return pending.then((r) => (r instanceof TokenFailure ? this.#fail(r.code, r.arg) : r.claims));
  }

  /** Verify a token not in the cache; fill the cache. Never rejects. */
  async #firstSight(token: string, nowSec: number): Promise<CachedToken | TokenFailure> {
    try {
      const r = await verifyJwt(token, this.#rules, nowSec);
      if (r instanceof TokenFailure) return r;
      const sub = r.sub as string;
      const jti = r.jti as string | undefined;
      if (this.#revocation.has(sub, jti)) return new TokenFailure('GW_ERR_AUTH_REVOKED');
      const entry: CachedToken = { claims: deepFreeze(r), exp: r.exp as number, sub, jti };
      this.#cache.set(token, entry, nowSec);
      return entry;
    } catch (e) {
      this.#log.error({ err: e instanceof Error ? e.name : 'unknown' }, 'auth: token verification failed unexpectedly');
      return new TokenFailure('GW_ERR_AUTH_MALFORMED_TOKEN');
    } finally {
      this.#inflight.delete(token);
    }
  }

  isRevoked(sub: string | undefined, jti: string | undefined): boolean {
    return this.#revocation.has(sub, jti);
  }

  reject(code: 'GW_ERR_AUTH_MISSING_TOKEN' | 'GW_ERR_AUTH_MALFORMED_TOKEN'): GatewayError {
    this.#metrics.failures.inc({ code });
    return authError(code);
  }

  jwks(): { keys: object[] } {
    return this.#keys.jwks;
  }

  async exchange(input: { headers: Record<string, string | string[] | undefined>; body: unknown; ip: string }): Promise<TokenResponse> {
    if (!this.#keys.signer || (!this.#apiKeys && !this.#oidc)) this.#fail('GW_ERR_AUTH_NOT_CONFIGURED');
    const cred = bearerToken(input.headers.authorization);
    if (cred === null) this.#fail('GW_ERR_AUTH_MALFORMED_TOKEN');
    if (cred === undefined) this.#fail('GW_ERR_AUTH_MISSING_TOKEN');
    if (cred.length > this.#maxBytes) this.#fail('GW_ERR_AUTH_TOKEN_TOO_LARGE');
    let sub: unknown;
    let source: Readonly<Record<string, unknown>>;
    let via: 'oidc' | 'api_key';
    if (this.#oidc && JWT_SHAPE.test(cred)) {
      via = 'oidc';
      try {
        source = await this.#oidc.verify(cred);
      } catch (e) {
        const err = e instanceof OidcError ? e : new OidcError('unavailable', 'unknown');
        if (err.kind === 'unavailable') {
          this.#log.warn({ reason: err.reason, ip: input.ip }, 'auth: identity provider unavailable during token exchange');
          this.#fail('GW_ERR_AUTH_IDP_UNAVAILABLE');
        }
        this.#log.debug({ reason: err.reason, ip: input.ip }, 'auth: identity provider token refused');
        this.#fail('GW_ERR_AUTH_INVALID_CREDENTIAL');
      }
      sub = source[this.#oidc.subjectClaim];
    } else if (this.#apiKeys) {
      via = 'api_key';
      const entry = await this.#apiKeys.verify(cred);
      if (!entry) {
        this.#log.debug({ ip: input.ip }, 'auth: unknown API key');
        this.#fail('GW_ERR_AUTH_INVALID_CREDENTIAL');
      }
      source = entry.claims;
      sub = entry.sub;
    } else {
      this.#fail('GW_ERR_AUTH_INVALID_CREDENTIAL');
    }
    if (typeof sub !== 'string' || sub === '') this.#fail('GW_ERR_AUTH_INVALID_CREDENTIAL');
    if (this.#revocation.has(sub, undefined)) {
      this.#log.info({ sub, via, ip: input.ip }, 'auth: token refused to a revoked subject');
      this.#fail('GW_ERR_AUTH_REVOKED');
    }
    const { token, expires_at, jti } = await this.#issue(sub, this.#pick(source), this.#cfg.tokenTtl);
    this.#metrics.issued.inc({ via });
    this.#log.info({ sub, via, kid: this.#keys.signer?.kid, jti, ip: input.ip }, 'auth: token issued');
    return { token, expires_at, refresh_in: refreshIn(this.#cfg.tokenTtl, this.#cfg.refreshBefore), token_type: 'Bearer' };
  }

  async mint(claims: { sub: string; [k: string]: unknown }, ttlSeconds?: number): Promise<{ token: string; expires_at: number }> {
    if (!this.#keys.signer) this.#fail('GW_ERR_AUTH_NOT_CONFIGURED');
    if (typeof claims?.sub !== 'string' || claims.sub === '') throw new GatewayError('GW_ERR_REQ_BAD_REQUEST', ['sub must be a non-empty string']);
    const ttl = ttlSeconds ?? this.#cfg.tokenTtl;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_MINT_TTL) throw new GatewayError('GW_ERR_REQ_BAD_REQUEST', [`ttl must be a whole number of seconds from 1 to ${MAX_MINT_TTL} (7 days), got ${ttl}`]);
    if (this.#revocation.has(claims.sub, undefined)) this.#fail('GW_ERR_AUTH_REVOKED');
    const { token, expires_at } = await this.#issue(claims.sub, claims, ttl);
    this.#metrics.issued.inc({ via: 'mint' });
    return { token, expires_at };
  }

  close(): void {
    const own = internals.get(this);
    if (own && !own.adopted) own.cache.clear();
  }

  /** The configured claims of a credential, then the defaults for those it lacks. */
  #pick(source: Readonly<Record<string, unknown>>): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const name of this.#cfg.claims.copy) {
      if (!RESERVED.has(name) && Object.hasOwn(source, name) && source[name] !== undefined) out[name] = source[name];
    }
    for (const [name, v] of Object.entries(this.#cfg.claims.defaults) as Array<[string, JsonValue]>) {
      if (!RESERVED.has(name) && !(name in out)) out[name] = v;
    }
    return out;
  }

  async #issue(sub: string, extra: Readonly<Record<string, unknown>>, ttl: number): Promise<{ token: string; expires_at: number; jti: string }> {
    const signer = this.#signer;
    if (!signer) this.#fail('GW_ERR_AUTH_NOT_CONFIGURED');
    const iat = Math.floor(this.#now() / 1000);
    const jti = newJti();
    const payload: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(extra)) if (!RESERVED.has(k)) payload[k] = v;
    Object.assign(payload, { iss: this.#cfg.issuer, aud: this.#cfg.audience, sub, iat, exp: iat + ttl, jti });
    return { token: await signJwt(signer, payload), expires_at: iat + ttl, jti };
  }
}

/**
 * Compile the `auth:` config section (already schema-validated with defaults; validated again
 * here so partial sections work). Runs at load and on every reload. `previous` is the running
 * service: its JWKS fetcher, dev key and verified-token cache are reused when still valid.
 * Throws GatewayError (GW_ERR_CONFIG_*) with a located message; never quotes secret material.
 */
export async function compileAuth(config: Record<string, unknown>, deps: AuthDeps, previous?: AuthService): Promise<AuthService> {
  const cfg = normalizeAuthConfig(config);
  const prev = previous ? internals.get(previous) : undefined;
  const files: string[] = [];
  const readSecret = (ref: SecretRef): string => {
    if ('file' in ref) files.push(resolve(deps.configDir, ref.file));
    return deps.readSecret(ref);
  };
  const keys = loadKeys(cfg, readSecret, deps.log, prev?.keys);
  const imported = await importKeys(keys);
  const { revocation, file: revocationFile } = loadRevocation(cfg.revocation, deps.configDir);
  if (revocationFile) files.push(revocationFile);
  const apiRef = cfg.credentials.apiKeys;
  let apiKeys = apiRef ? ApiKeyStore.parse(readSecret(apiRef), refDescription(apiRef)) : undefined;
  // Dev mode with no credential configured: a generated API key, so the exchange works out of the box.
  const devApiKey = cfg.dev && !apiRef && !cfg.credentials.oidc ? prev?.devApiKey ?? sharedDevApiKey() ?? generateApiKey() : undefined;
  if (devApiKey) apiKeys = ApiKeyStore.single(devApiKey, { sub: 'dev', claims: {} });
  const oidc = cfg.credentials.oidc ? new OidcVerifier(cfg.credentials.oidc, cfg.clockSkewSeconds, prev?.oidc) : undefined;
  // Cached verdicts stay valid while the same keys, issuer, audience and algorithms apply.
  const cacheKey = JSON.stringify([keys.fingerprint, cfg.issuer, cfg.audience, [...cfg.algorithms].sort(), cfg.cacheSize]);
  const reuseCache = prev !== undefined && prev.cacheKey === cacheKey;
  const cache = reuseCache ? prev.cache : new TokenCache(cfg.cacheSize);
  if (reuseCache) prev.adopted = true;
  const metrics = authMetrics(deps.metrics);
  metrics.setCacheSize(() => cache.size);
  const service = new GatewayAuthService({
    cfg, keys, cache, revocation, apiKeys, oidc, metrics, log: deps.log, now: deps.now ?? Date.now, files, devApiKey, imported,
  });
  internals.set(service, { keys, cache, cacheKey, oidc, adopted: false, devApiKey });
  deps.log.info({
    signer: keys.signer?.kid ?? null,
    verifyKeys: [...keys.verify.keys()],
    apiKeys: apiKeys?.size ?? 0,
    oidcIssuer: cfg.credentials.oidc?.issuer ?? null,
    revokedSubjects: revocation.subjects.size,
    revokedTokenIds: revocation.tokenIds.size,
  }, 'auth: compiled');
  return service;
}
