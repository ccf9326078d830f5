/**
 * Our short-lived tokens: compact JWS (EdDSA or ES256), signed and verified with node:crypto
 * KeyObjects built at load. Verification is synchronous and strict: the header's `alg` must be on
 * the allow-list AND equal to the algorithm of the key its `kid` names (no `none`, no HMAC, no
 * algorithm confusion), `crit` is refused, segments must be base64url. jose is used for the IdP
 * path and in the tests as an independent implementation to check interoperability; here a
 * synchronous verify keeps an uncached check at ~60 µs with no thread-pool hop, and a cached one
 * at a Map lookup.
 */
import { randomBytes, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import type { ErrorCode } from '../errors.ts';
import type { TokenAlg } from './config.ts';
import type { SignKey, VerifyKey } from './keys.ts';

/** Three base64url segments; the signature may be empty so that `alg: none` is reported as such. */
const SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** A verification failure: the code only (the caller counts it and builds the error). */
export class TokenFailure {
  readonly code: ErrorCode;
  readonly arg: string | undefined;
  constructor(code: ErrorCode, arg?: string) { this.code = code; this.arg = arg; }
}

export function b64urlJson(v: unknown): string {
  return Buffer.from(JSON.stringify(v)).toString('base64url');
}

/** A random token id (128 bits). */
export function newJti(): string {
  return randomBytes(16).toString('base64url');
}

/** Sign a claims set with `key` (header: alg, kid, typ). */
export function signJwt(key: SignKey, payload: Record<string, unknown>): string {
  const input = `${b64urlJson({ alg: key.alg, kid: key.kid, typ: 'JWT' })}.${b64urlJson(payload)}`;
  const data = Buffer.from(input, 'latin1');
  const sig = key.alg === 'EdDSA'
    ? cryptoSign(null, data, key.key)
    : cryptoSign('sha256', data, { key: key.key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}

function decodeJson(segment: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function signatureOk(alg: TokenAlg, key: VerifyKey, data: Buffer, sig: Buffer): boolean {
  if (sig.length !== 64) return false; // Ed25519 and P-256 (IEEE P1363) signatures are 64 bytes
  try {
    return alg === 'EdDSA'
      ? cryptoVerify(null, data, key.key, sig)
      : cryptoVerify('sha256', data, { key: key.key, dsaEncoding: 'ieee-p1363' }, sig);
  } catch {
    return false;
  }
}

export interface VerifyRules {
  readonly keys: ReadonlyMap<string, VerifyKey>;
  readonly algorithms: ReadonlySet<string>;
  readonly issuer: string;
  readonly audience: string;
  readonly skew: number;
}

/**
 * Check signature and claims of one token (no cache, no revocation). Returns the payload or a
 * TokenFailure (returned, not thrown: the caller decides how to count and throw).
 */
export function verifyJwt(token: string, rules: VerifyRules, nowSec: number): Record<string, unknown> | TokenFailure {
  if (!SHAPE.test(token)) return new TokenFailure('GW_ERR_AUTH_MALFORMED_TOKEN');
  const d1 = token.indexOf('.');
  const d2 = token.lastIndexOf('.');
  const header = decodeJson(token.slice(0, d1));
  if (!header) return new TokenFailure('GW_ERR_AUTH_MALFORMED_TOKEN');
  const alg = header.alg;
  if (typeof alg !== 'string' || !rules.algorithms.has(alg)) return new TokenFailure('GW_ERR_AUTH_ALGORITHM_NOT_ALLOWED');
  if (header.crit !== undefined) return new TokenFailure('GW_ERR_AUTH_MALFORMED_TOKEN');
  const kid = header.kid;
  const key = typeof kid === 'string' ? rules.keys.get(kid) : undefined;
  if (!key) return new TokenFailure('GW_ERR_AUTH_UNKNOWN_KEY');
  if (key.alg !== alg) return new TokenFailure('GW_ERR_AUTH_ALGORITHM_NOT_ALLOWED');
  if (!signatureOk(key.alg, key, Buffer.from(token.slice(0, d2), 'latin1'), Buffer.from(token.slice(d2 + 1), 'base64url'))) {
    return new TokenFailure('GW_ERR_AUTH_INVALID_SIGNATURE');
  }
  // Signed by us from here on; still check everything.
  const p = decodeJson(token.slice(d1 + 1, d2));
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

