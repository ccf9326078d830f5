/**
 * Signing and verification keys, parsed once per load into node:crypto KeyObjects (checked,
 * fingerprinted, published as JWKS) and imported once per load as jose CryptoKeys (importKeys):
 * the request path never parses or converts a key. Rotation: every configured key verifies; one signs.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { importJWK } from 'jose';
import type { JWK } from 'jose';
import type { Logger } from '../types.ts';
import { authConfigError } from './config.ts';
import type { AuthConfig, SecretRef, TokenAlg } from './config.ts';

export interface VerifyKey {
  readonly kid: string;
  readonly alg: TokenAlg;
  readonly key: KeyObject;
}

export interface SignKey {
  readonly kid: string;
  readonly alg: TokenAlg;
  readonly key: KeyObject;
}

/** A key in the form jose uses (a WebCrypto CryptoKey), imported once per load. */
export interface ImportedKey {
  readonly kid: string;
  readonly alg: TokenAlg;
  readonly key: Awaited<ReturnType<typeof importJWK>>;
}

export interface KeySet {
  /** Undefined when only verify-only keys are configured (exchange/mint then answer NOT_CONFIGURED). */
  readonly signer: SignKey | undefined;
  readonly verify: ReadonlyMap<string, VerifyKey>;
  /** Public JWKS document (what GET /.well-known/jwks.json serves). */
  readonly jwks: { keys: object[] };
  /** Digest of the verification keys: equal digests verify exactly the same tokens. */
  readonly fingerprint: string;
  /** True for the dev-mode in-memory key. */
  readonly ephemeral: boolean;
}

type ReadSecret = (ref: SecretRef) => string;

function describeRef(ref: SecretRef): string {
  return 'env' in ref ? `env ${ref.env}` : `file ${ref.file}`;
}

/** PEM or JWK text → KeyObject. Messages name the source, never the content. */
function parseKey(text: string, kind: 'private' | 'public', where: string, ref: SecretRef, kid: string): KeyObject {
  const s = text.trim();
  let key: KeyObject;
  try {
    if (s.startsWith('{')) {
      const jwk = JSON.parse(s) as Record<string, unknown>;
      if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) throw new Error('not a JWK');
      if (typeof jwk.kid === 'string' && jwk.kid !== kid) {
        throw authConfigError(where, `the JWK in ${describeRef(ref)} has kid "${jwk.kid}" but the config says "${kid}"`);
      }
      const isPrivate = 'd' in jwk;
      if (kind === 'public' && isPrivate) throw authConfigError(where, `${describeRef(ref)} holds a private key; give the public half as publicKey (or use privateKey)`);
      if (kind === 'private' && !isPrivate) throw authConfigError(where, `${describeRef(ref)} holds a public key, not a private key`);
      // Node wants only the key members; drop metadata like kid/use/alg.
      const { kty, crv, x, y, d } = jwk as Record<string, string>;
      const bare = Object.fromEntries(Object.entries({ kty, crv, x, y, d }).filter(([, v]) => v !== undefined));
      key = kind === 'private' ? createPrivateKey({ key: bare, format: 'jwk' }) : createPublicKey({ key: bare, format: 'jwk' });
    } else if (s.includes('-----BEGIN')) {
      const isPrivate = /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(s);
      if (/ENCRYPTED/.test(s)) throw authConfigError(where, `${describeRef(ref)} holds an encrypted key; decrypt it (PKCS8 PEM) first`);
      if (kind === 'public' && isPrivate) throw authConfigError(where, `${describeRef(ref)} holds a private key; give the public half as publicKey (or use privateKey)`);
      if (kind === 'private' && !isPrivate) throw authConfigError(where, `${describeRef(ref)} holds a public key, not a private key`);
      key = kind === 'private' ? createPrivateKey(s) : createPublicKey(s);
    } else {
      throw new Error('unrecognized format');
    }
  } catch (e) {
    if (e instanceof Error && e.name === 'GatewayError') throw e;
    // Node's parse errors do not contain key material, but we do not echo them anyway.
    throw authConfigError(where, `${describeRef(ref)} is not a valid ${kind} key (expected PEM ${kind === 'private' ? 'PKCS8' : 'SPKI'} or JWK JSON)`);
  }
  return key;
}

function checkType(key: KeyObject, alg: TokenAlg, where: string): void {
  const ok = alg === 'EdDSA'
    ? key.asymmetricKeyType === 'ed25519'
    : key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
  if (!ok) throw authConfigError(where, `key type ${key.asymmetricKeyType ?? 'unknown'} does not match alg ${alg} (${alg === 'EdDSA' ? 'Ed25519' : 'EC P-256'} expected)`);
}

function publicJwk(kid: string, alg: TokenAlg, pub: KeyObject): object {
  return { ...pub.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

/** Dev credentials handed in from outside (cluster workers share the primary's: core/cluster). */
let sharedDev: { key: SignKey; apiKey: string } | undefined;

/**
 * Make every dev key and dev API key this process generates from now on these ones, so tokens
 * minted by one cluster worker verify on every other (`ghostgate start --workers N`).
 */
export function useSharedDevCredentials(c: { kid: string; pem: string; apiKey: string }): void {
  sharedDev = { key: { kid: c.kid, alg: 'EdDSA', key: createPrivateKey(c.pem) }, apiKey: c.apiKey };
}

/** The shared dev API key, if one was handed in (see useSharedDevCredentials). */
export function sharedDevApiKey(): string | undefined { return sharedDev?.apiKey; }

/** An ephemeral Ed25519 key for dev mode (the shared one in a cluster worker). */
export function generateDevKey(): SignKey {
  if (sharedDev) return sharedDev.key;
  const { privateKey } = generateKeyPairSync('ed25519');
  return { kid: `dev-${randomBytes(4).toString('hex')}`, alg: 'EdDSA', key: privateKey };
}

/**
 * Load the configured keys. With `dev` and no keys, reuse `previous`'s ephemeral key (so tokens
 * survive a reload) or generate one.
 */
export function loadKeys(cfg: AuthConfig, readSecret: ReadSecret, log: Logger, previous?: KeySet): KeySet {
  const verify = new Map<string, VerifyKey>();
  const jwks: object[] = [];
  let signer: SignKey | undefined;
  let ephemeral = false;
  if (cfg.signingKeys.length === 0) {
    if (!cfg.dev) throw authConfigError('signingKeys', 'at least one key is required (or set auth.dev: true for an ephemeral development key)');
    signer = previous?.ephemeral && previous.signer ? previous.signer : generateDevKey();
    ephemeral = true;
    if (signer !== previous?.signer) {
      log.warn({ kid: signer.kid }, 'auth: dev mode, signing with an ephemeral in-memory key: tokens die with the process');
    }
    const pub = createPublicKey(signer.key);
    verify.set(signer.kid, { kid: signer.kid, alg: signer.alg, key: pub });
    jwks.push(publicJwk(signer.kid, signer.alg, pub));
  } else {
    const actives = cfg.signingKeys.filter((k) => k.active);
    if (actives.length > 1) throw authConfigError('signingKeys', `only one key may be active (${actives.map((k) => k.kid).join(', ')} are)`);
    cfg.signingKeys.forEach((k, i) => {
      const where = `signingKeys[${i}]`;
      if (verify.has(k.kid)) throw authConfigError(`${where}.kid`, `kid "${k.kid}" is used twice`);
      if (k.privateKey && k.publicKey) throw authConfigError(where, 'give privateKey or publicKey, not both');
      if (!cfg.algorithms.includes(k.alg)) throw authConfigError(`${where}.alg`, `${k.alg} is not in auth.algorithms`);
      if (k.active && !k.privateKey) throw authConfigError(`${where}.active`, 'a verify-only key (publicKey) cannot be active');
      let pub: KeyObject;
      if (k.privateKey) {
        const priv = parseKey(readSecret(k.privateKey), 'private', `${where}.privateKey`, k.privateKey, k.kid);
        checkType(priv, k.alg, `${where}.privateKey`);
        pub = createPublicKey(priv);
        if (k.active || (!signer && actives.length === 0)) signer = { kid: k.kid, alg: k.alg, key: priv };
      } else {
        const ref = k.publicKey as SecretRef;
        pub = parseKey(readSecret(ref), 'public', `${where}.publicKey`, ref, k.kid);
        checkType(pub, k.alg, `${where}.publicKey`);
      }
      verify.set(k.kid, { kid: k.kid, alg: k.alg, key: pub });
      jwks.push(publicJwk(k.kid, k.alg, pub));
    });
  }
  const h = createHash('sha256');
  for (const k of [...verify.values()].sort((a, b) => (a.kid < b.kid ? -1 : 1))) {
    h.update(`${k.kid}\0${k.alg}\0`).update(k.key.export({ format: 'der', type: 'spki' })).update('\0');
  }
  return { signer, verify, jwks: { keys: jwks }, fingerprint: h.digest('hex'), ephemeral };
}

/**
 * The key set as jose keys (CryptoKeys), imported once per load so that no request imports or
 * converts a key: every verification key, and the signer's private key.
 */
export async function importKeys(ks: KeySet): Promise<{ verify: ReadonlyMap<string, ImportedKey>; signer: ImportedKey | undefined }> {
  const verify = new Map<string, ImportedKey>();
  for (const k of ks.verify.values()) {
    verify.set(k.kid, { kid: k.kid, alg: k.alg, key: await importJWK(k.key.export({ format: 'jwk' }) as JWK, k.alg) });
  }
  const s = ks.signer;
  const signer = s ? { kid: s.kid, alg: s.alg, key: await importJWK(s.key.export({ format: 'jwk' }) as JWK, s.alg) } : undefined;
  return { verify, signer };
}
