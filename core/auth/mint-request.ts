/**
 * The body of the admin plane's `POST /-/token`: `{sub, ttlSeconds?, claims?}`, checked whole.
 * Nothing is ignored in silence: an unknown field, a TTL out of range, a claim the gateway sets
 * itself are each a 400 GW_ERR_REQ_INVALID_BODY whose message names the field and what it takes
 * (a token minted with the default TTL because `ttl` was misspelled looks like success).
 */
import { GatewayError } from '../errors.ts';
import { MAX_MINT_TTL } from './config.ts';
import { RESERVED_CLAIMS } from './schema.ts';

export interface MintRequest { sub: string; ttlSeconds: number | undefined; claims: Record<string, unknown> }

const FIELDS = ['sub', 'ttlSeconds', 'claims'] as const;
/** Names people reach for, and the field they meant. */
const MEANT: Record<string, (typeof FIELDS)[number]> = {
  ttl: 'ttlSeconds', ttl_seconds: 'ttlSeconds', ttlseconds: 'ttlSeconds', expiresin: 'ttlSeconds', expires_in: 'ttlSeconds', lifetime: 'ttlSeconds',
  subject: 'sub', user: 'sub', claim: 'claims',
};

const invalid = (why: string): GatewayError => new GatewayError('GW_ERR_REQ_INVALID_BODY', [why]);

/** Check the parsed JSON body (undefined when there was none); throws GW_ERR_REQ_INVALID_BODY. */
export function parseMintRequest(body: unknown): MintRequest {
  const b = body ?? {};
  if (typeof b !== 'object' || Array.isArray(b)) throw invalid('the body must be a JSON object {sub, ttlSeconds?, claims?}');
  const o = b as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => !(FIELDS as readonly string[]).includes(k));
  if (unknown.length) {
    const named = unknown.map((k) => { const m = MEANT[k.toLowerCase()]; return `"${k}"${m ? ` (did you mean "${m}"?)` : ''}`; });
    throw invalid(`unknown field${unknown.length > 1 ? 's' : ''} ${named.join(', ')}; the fields are sub, ttlSeconds, claims`);
  }
  const { sub, ttlSeconds, claims } = o;
  if (typeof sub !== 'string' || sub === '') throw invalid('"sub" must be a non-empty string');
  if (ttlSeconds !== undefined && (typeof ttlSeconds !== 'number' || !Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_MINT_TTL)) {
    throw invalid(`"ttlSeconds" must be a whole number of seconds from 1 to ${MAX_MINT_TTL} (7 days), got ${typeof ttlSeconds === 'number' ? String(ttlSeconds) : JSON.stringify(ttlSeconds)}`);
  }
  if (claims !== undefined && (claims === null || typeof claims !== 'object' || Array.isArray(claims))) throw invalid('"claims" must be an object');
  const c = (claims ?? {}) as Record<string, unknown>;
  for (const k of Object.keys(c)) {
    if (k === 'sub') throw invalid('"claims.sub": the subject goes in "sub"');
    if ((RESERVED_CLAIMS as readonly string[]).includes(k)) throw invalid(`"claims.${k}" is set by the gateway (reserved: ${RESERVED_CLAIMS.join(', ')})`);
  }
  return { sub, ttlSeconds, claims: c };
}
