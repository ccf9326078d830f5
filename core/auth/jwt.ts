/**
 * Our short-lived tokens: compact JWS (EdDSA or ES256), signed and verified with jose on keys
 * imported once at load (keys.ts importKeys). Verification is strict: the header's `alg` must be
 * on the allow-list AND equal to the algorithm of the key its `kid` names (no `none`, no HMAC, no
 * algorithm confusion), `crit` is refused, segments must be base64url. The header and claim checks
 * are ours (each failure has its own GW_ERR_AUTH_* code); the signature is jose's `compactVerify`.
 * Only a token's first sight comes here: repeats are served from the cache (index.ts, cache.ts).
 */
import { randomBytes } from 'node:crypto';
import { CompactSign, compactVerify, errors } from 'jose';
import type { ErrorCode } from '../errors.ts';
import type { ImportedKey } from './keys.ts';

/** Three base64url segments; the signature may be empty so that `alg: none` is reported as such. */
const SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** A verification failure: the code only (the caller counts it and builds the error). */
export class TokenFailure {
  readonly code: ErrorCode;
  readonly arg: string | undefined;
  constructor(code: ErrorCode, arg?: string) { this.code = code; this.arg = arg; }
}

/** A random token id (128 bits). */
export function newJti(): string {
  return randomBytes(16).toString('base64url');
}

/** Sign a claims set with `key` (header: alg, kid, typ). */
export function signJwt(key: ImportedKey, payload: Record<string, unknown>): Promise<string> {
  return new CompactSign(Buffer.from(JSON.stringify(payload))).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' }).sign(key.key);
}

function decodeJson(bytes: Buffer): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(bytes.toString('utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export interface VerifyRules {
  readonly keys: ReadonlyMap<string, ImportedKey>;
  readonly algorithms: ReadonlySet<string>;
  readonly issuer: string;
  readonly audience: string;
  readonly skew: number;
}

/**
 * Check signature and claims of one token (no cache, no revocation). Resolves to the payload or
 * a TokenFailure (never rejects: the caller decides how to count and throw).
 */
export async function verifyJwt(token: string, rules: VerifyRules, nowSec: number): Promise<Record<string, unknown> | TokenFailure> {
  if (!SHAPE.test(token)) return new TokenFailure('GW_ERR_AUTH_MALFORMED_TOKEN');
  const d1 = token.indexOf('.');
  const header = decodeJson(Buffer.from(token.slice(0, d1), 'base64url'));
  if (!header) return new TokenFailure('GW_ERR_AUTH_MALFORMED_TOKEN');
  const alg = header.alg;
  if (typeof alg !== 'string' || !rules.algorithms.has(alg)) return new TokenFailure('GW_ERR_AUTH_ALGORITHM_NOT_ALLOWED');
  if (header.crit !== undefined) return new TokenFailure('GW_ERR_AUTH_MALFORMED_TOKEN');
  const kid = header.kid;
  const key = typeof kid === 'string' ? rules.keys.get(kid) : undefined;
  if (!key) return new TokenFailure('GW_ERR_AUTH_UNKNOWN_KEY');
  if (key.alg !== alg) return new TokenFailure('GW_ERR_AUTH_ALGORITHM_NOT_ALLOWED');
  let payload: Uint8Array;
  try {
    ({ payload } = await compactVerify(token, key.key, { algorithms: [key.alg] }));
  } catch (e) {
    return new TokenFailure(e instanceof errors.JWSSignatureVerificationFailed ? 'GW_ERR_AUTH_INVALID_SIGNATURE' : 'GW_ERR_AUTH_MALFORMED_TOKEN');
  }
  // Signed by us from here on; still check everything.
  const p = decodeJson(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength));
  if (!p) return new TokenFailure('GW_ERR_AUTH_MALFORMED_TOKEN');
  const { exp, nbf, sub, jti } = p;
  if (typeof exp !== 'number' || !Number.isFinite(exp)) return new TokenFailure('GW_ERR_AUTH_MALFORMED_TOKEN');
  if (nbf !== undefined && (typeof nbf !== 'number' || !Number.isFinite(nbf))) return new TokenFailure('GW_ERR_AUTH_MALFORMED_TOKEN');
  if (typeof sub !== 'string' || sub === '') return new TokenFailure('GW_ERR_AUTH_MALFORMED_TOKEN');
  if (jti !== undefined && typeof jti !== 'string') return new TokenFailure('GW_ERR_AUTH_MALFORMED_TOKEN');
  if (nowSec >= exp + rules.skew) return new TokenFailure('GW_ERR_AUTH_TOKEN_EXPIRED');
  if (nbf !== undefined && nbf > nowSec + rules.skew) return new TokenFailure('GW_ERR_AUTH_TOKEN_NOT_YET_VALID');
  if (p.iss !== rules.issuer) return new TokenFailure('GW_ERR_AUTH_CLAIM_MISMATCH', 'issuer');
  const aud = p.aud;
  if (!(aud === rules.audience || (Array.isArray(aud) && aud.includes(rules.audience)))) return new TokenFailure('GW_ERR_AUTH_CLAIM_MISMATCH', 'audience');
  return p;
}
