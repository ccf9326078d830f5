/**
 * Static API keys, held hashed in a secrets file operators edit (reload applies):
 *
 *   - sub: alice
 *     hash: sha256:<hex of SHA-256 of the key>        # keys generated with generateApiKey()
 *     claims: { org: acme, plan: pro }
 *   - sub: bob
 *     id: bob1                                         # scrypt entries need an id; the key is "<id>.<secret>"
 *     hash: scrypt:16384:8:1:<salt b64url>:<dk b64url>
 *
 * Lookup never depends on a secret's bytes: SHA-256 keys are found by their digest (an attacker
 * cannot steer a digest) and compared with timingSafeEqual against the entry or a dummy;
 * scrypt keys are found by id and an unknown id runs scrypt on a dummy entry with the same
 * parameters. So a wrong key and an unknown key cost the same work.
 */
import { createHash, randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import type { ScryptOptions } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import type { JsonValue } from '../types.ts';
import { authConfigError } from './config.ts';

export interface ApiKeyEntry {
  readonly sub: string;
  readonly claims: Readonly<Record<string, JsonValue>>;
}

interface ScryptEntry {
  readonly entry: ApiKeyEntry | undefined;
  readonly salt: Buffer;
  readonly dk: Buffer;
  readonly params: Required<Pick<ScryptOptions, 'N' | 'r' | 'p'>> & { maxmem: number };
}

const SHA256 = /^sha256:([0-9a-fA-F]{64})$/;
const SCRYPT = /^scrypt:([0-9]+):([0-9]+):([0-9]+):([A-Za-z0-9_-]{16,}):([A-Za-z0-9_-]{32,})$/;
const ID = /^[A-Za-z0-9_-]{1,64}$/;
const FIELDS = new Set(['sub', 'hash', 'claims', 'id']);

function scryptAsync(key: string, salt: Buffer, len: number, params: ScryptEntry['params']): Promise<Buffer> {
  return new Promise((res, rej) => scryptCb(key, salt, len, params, (err, dk) => (err ? rej(err) : res(dk))));
}

function scryptParams(N: number, r: number, p: number): ScryptEntry['params'] {
  return { N, r, p, maxmem: 128 * N * r * p + 1024 * 1024 * 8 };
}

export class ApiKeyStore {
  readonly #bySha = new Map<string, { entry: ApiKeyEntry; digest: Buffer }>();
  readonly #byId = new Map<string, ScryptEntry>();
  readonly #dummyDigest = randomBytes(32);
  #dummyScrypt: ScryptEntry | undefined;

  get size(): number { return this.#bySha.size + this.#byId.size; }

  /** Parse the file's text. `source` names it in errors; no error quotes a hash or a key. */
  static parse(text: string, source: string): ApiKeyStore {
    const where = `credentials.apiKeys(${source})`;
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch {
      throw authConfigError(where, 'is not valid YAML/JSON');
    }
    if (doc === null || doc === undefined) doc = [];
    if (!Array.isArray(doc)) throw authConfigError(where, 'must be a list of {sub, hash, claims?, id?}');
    const store = new ApiKeyStore();
    doc.forEach((raw: unknown, i: number) => {
      const at = `${where}[${i}]`;
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw authConfigError(at, 'must be an object {sub, hash, claims?, id?}');
      const e = raw as Record<string, unknown>;
      for (const k of Object.keys(e)) if (!FIELDS.has(k)) throw authConfigError(at, `unknown field "${k}"`);
      if (typeof e.sub !== 'string' || e.sub === '') throw authConfigError(`${at}.sub`, 'must be a non-empty string');
      const claims = e.claims ?? {};
      if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) throw authConfigError(`${at}.claims`, 'must be an object');
      const entry: ApiKeyEntry = { sub: e.sub, claims: claims as Record<string, JsonValue> };
      const hash = typeof e.hash === 'string' ? e.hash.trim() : '';
      let m: RegExpExecArray | null;
      if ((m = SHA256.exec(hash))) {
        const hex = m[1].toLowerCase();
        if (store.#bySha.has(hex)) throw authConfigError(`${at}.hash`, 'the same key hash appears twice');
        store.#bySha.set(hex, { entry, digest: Buffer.from(hex, 'hex') });
      } else if ((m = SCRYPT.exec(hash))) {
        if (typeof e.id !== 'string' || !ID.test(e.id)) throw authConfigError(`${at}.id`, 'scrypt entries need an id ([A-Za-z0-9_-]{1,64}); clients present "<id>.<secret>"');
        if (store.#byId.has(e.id)) throw authConfigError(`${at}.id`, `id "${e.id}" appears twice`);
        const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
        if (N < 1024 || N > 1 << 20 || (N & (N - 1)) !== 0 || r < 1 || r > 32 || p < 1 || p > 16) {
          throw authConfigError(`${at}.hash`, 'scrypt parameters out of range (N a power of two in 1024..1048576, r 1..32, p 1..16)');
        }
        const s: ScryptEntry = { entry, salt: Buffer.from(m[4], 'base64url'), dk: Buffer.from(m[5], 'base64url'), params: scryptParams(N, r, p) };
        store.#byId.set(e.id, s);
        store.#dummyScrypt ??= { entry: undefined, salt: randomBytes(s.salt.length), dk: randomBytes(s.dk.length), params: s.params };
      } else {
        throw authConfigError(`${at}.hash`, 'must be "sha256:<64 hex>" or "scrypt:<N>:<r>:<p>:<salt>:<hash>" (see docs/auth.md)');
      }
    });
    return store;
  }

  /** A store holding one key (dev mode's generated key): the key itself is kept only as its digest. */
  static single(key: string, entry: ApiKeyEntry): ApiKeyStore {
    const store = new ApiKeyStore();
    const digest = createHash('sha256').update(key, 'utf8').digest();
    store.#bySha.set(digest.toString('hex'), { entry, digest });
    return store;
  }

  /** The entry for a presented key, or undefined. Same work for a wrong key and an unknown key. */
  async verify(key: string): Promise<ApiKeyEntry | undefined> {
    const digest = createHash('sha256').update(key, 'utf8').digest();
    const hit = this.#bySha.get(digest.toString('hex'));
    const equal = timingSafeEqual(digest, hit ? hit.digest : this.#dummyDigest);
    if (hit && equal) return hit.entry;
    if (!this.#dummyScrypt) return undefined;
    const dot = key.indexOf('.');
    const s = (dot > 0 && this.#byId.get(key.slice(0, dot))) || this.#dummyScrypt;
    const dk = await scryptAsync(key, s.salt, s.dk.length, s.params);
    const ok = timingSafeEqual(dk, s.dk);
    return ok && s.entry ? s.entry : undefined;
  }
}

/** A new random API key (256 bits), e.g. `ggk_3q…`. With `id`, the scrypt form `<id>.<secret>`. */
export function generateApiKey(id?: string): string {
  const secret = randomBytes(32).toString('base64url');
  return id ? `${id}.${secret}` : `ggk_${secret}`;
}

/**
 * The `hash` to write in the API keys file for `key`. `sha256` (default) suits generated keys
 * (256 random bits need no key stretching); `scrypt` suits human-chosen ones (then the entry
 * needs `id` and the key must be `<id>.<secret>`).
 */
export function hashApiKey(key: string, scheme: 'sha256' | 'scrypt' = 'sha256', opts: { N?: number; r?: number; p?: number } = {}): Promise<string> {
  if (scheme === 'sha256') return Promise.resolve(`sha256:${createHash('sha256').update(key, 'utf8').digest('hex')}`);
  const { N = 16384, r = 8, p = 1 } = opts;
  const salt = randomBytes(16);
  return scryptAsync(key, salt, 32, scryptParams(N, r, p)).then((dk) => `scrypt:${N}:${r}:${p}:${salt.toString('base64url')}:${dk.toString('base64url')}`);
}
