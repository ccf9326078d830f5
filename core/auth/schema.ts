/**
 * JSON Schema of the `auth:` section of gateway.config.yaml. The core embeds it in the gateway
 * schema (ajv, `useDefaults: true, coerceTypes: true`); `compileAuth` validates with it again so
 * a partial section (tests, the CLI) gets the same defaults. Draft-07 keywords only.
 * Semantic checks a schema cannot express (one active key, kid uniqueness, key types) are done
 * by `compileAuth` with located messages.
 */
import type { JsonSchema } from '../types.ts';

const secretRef = {
  description: 'Where a secret is read from: an environment variable or a file relative to the config directory (never inline).',
  oneOf: [
    { type: 'object', required: ['env'], additionalProperties: false, properties: { env: { type: 'string', minLength: 1 } } },
    { type: 'object', required: ['file'], additionalProperties: false, properties: { file: { type: 'string', minLength: 1 } } },
  ],
} as const;

/** Seconds as an integer, or a string like `90s`, `30m`, `1h`, `1d` (a bare number string is seconds). */
const duration = <D extends string>(def: D, description: string) => ({
  type: ['integer', 'string'],
  pattern: '^[0-9]+(s|m|h|d)?$',
  minimum: 1,
  default: def,
  description,
}) as const;

/** Algorithms accepted for our own tokens. HMAC and `none` are never accepted. */
export const TOKEN_ALGORITHMS = ['EdDSA', 'ES256'] as const;
/** Algorithms an identity provider's tokens may use (asymmetric only). */
export const IDP_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;
/** Claims the gateway always sets itself; never copied from a credential. */
export const RESERVED_CLAIMS = ['iss', 'aud', 'exp', 'iat', 'nbf', 'jti'] as const;

const signingKey = {
  type: 'object',
  required: ['kid'],
  additionalProperties: false,
  anyOf: [{ required: ['privateKey'] }, { required: ['publicKey'] }],
  properties: {
    kid: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$', description: 'Key id, published in the JWKS and in every token header.' },
    alg: { enum: [...TOKEN_ALGORITHMS], default: 'EdDSA', description: 'EdDSA (Ed25519, default) or ES256 (P-256).' },
    privateKey: { ...secretRef, description: 'PEM (PKCS8) or JWK JSON private key: this key can sign.' },
    publicKey: { ...secretRef, description: 'PEM (SPKI) or JWK JSON public key: verify only (a retired key whose tokens are still live).' },
    active: { type: 'boolean', default: false, description: 'This key signs new tokens. Default: the first key with a privateKey.' },
  },
} as const;

const oidc = {
  type: 'object',
  required: ['issuer', 'audience', 'jwksUri'],
  additionalProperties: false,
  description: 'Accept an identity provider\'s JWT (OAuth access token or OIDC ID token) as the long-lived credential.',
  properties: {
    issuer: { type: 'string', minLength: 1, description: 'Expected `iss` of the IdP token.' },
    audience: {
      description: 'Expected `aud` (one of these).',
      anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 }],
    },
    jwksUri: { type: 'string', pattern: '^https?://', description: 'The IdP\'s JWKS URL (fetched and cached, not per request).' },
    algorithms: {
      type: 'array', items: { enum: [...IDP_ALGORITHMS] }, minItems: 1, uniqueItems: true, default: ['RS256', 'ES256'],
      description: 'Allowed IdP token algorithms (asymmetric only).',
    },
    subjectClaim: { type: 'string', minLength: 1, default: 'sub', description: 'IdP claim that becomes our `sub`.' },
    timeoutMs: { type: 'integer', minimum: 100, maximum: 60_000, default: 2_000, description: 'JWKS fetch budget; past it the exchange fails with GW_ERR_AUTH_IDP_UNAVAILABLE.' },
    cooldownMs: { type: 'integer', minimum: 0, default: 30_000, description: 'After a fetch, an unknown `kid` triggers a refetch only after this.' },
    cacheMaxAgeMs: { type: 'integer', minimum: 1_000, default: 600_000, description: 'Refetch the JWKS when older than this.' },
  },
} as const;

/** The `auth:` section's schema, and the source of its type (`AuthConfig` in ./config.ts). */
export const authConfigSchema = {
  type: 'object',
  additionalProperties: false,
  description: 'Token exchange (POST /v1/token) and verification of short-lived tokens by the `auth` step. Absent: no auth.',
  properties: {
    issuer: { type: 'string', minLength: 1, default: 'ghostgate', description: '`iss` of the tokens we issue and accept.' },
    audience: { type: 'string', minLength: 1, default: 'ghostgate-completions', description: '`aud` of the tokens we issue and accept.' },
    tokenTtl: duration('30m', 'Lifetime of issued tokens (seconds, or 30m, 1h...). Default 30m, at most 24h.'),
    refreshBefore: duration('5m', 'refresh_in = tokenTtl − this, but never less than half the lifetime.'),
    clockSkewSeconds: { type: 'integer', minimum: 0, maximum: 600, default: 30, description: 'Leeway for exp/nbf.' },
    algorithms: {
      type: 'array', items: { enum: [...TOKEN_ALGORITHMS] }, minItems: 1, uniqueItems: true, default: [...TOKEN_ALGORITHMS],
      description: 'Algorithms accepted on our tokens. HS* and none are never accepted.',
    },
    dev: { type: 'boolean', default: false, description: 'With no signingKeys: sign with an ephemeral in-memory Ed25519 key (tokens die with the process).' },
    maxTokenBytes: { type: 'integer', minimum: 256, maximum: 65_536, default: 8_192, description: 'Longer bearer tokens/credentials are refused before parsing.' },
    cacheSize: { type: 'integer', minimum: 0, maximum: 10_000_000, default: 100_000, description: 'Verified tokens remembered until they expire (0 = no cache).' },
    signingKeys: { type: 'array', items: signingKey, default: [], description: 'The signer is the `active: true` key (or the first with a privateKey); every key verifies.' },
    credentials: {
      type: 'object', additionalProperties: false, default: {},
      description: 'Long-lived credentials accepted by POST /v1/token. None: exchange answers GW_ERR_AUTH_NOT_CONFIGURED.',
      properties: {
        apiKeys: { ...secretRef, description: 'YAML/JSON list of {sub, hash, claims?, id?}: hashed API keys. Re-read on every reload.' },
        oidc,
      },
    },
    claims: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        copy: {
          type: 'array', uniqueItems: true, default: ['sub', 'org', 'plan', 'features'],
          items: { type: 'string', minLength: 1, not: { enum: [...RESERVED_CLAIMS] } },
          description: 'Credential claims (API key entry `claims`, or the IdP token) copied into our token.',
        },
        defaults: { type: 'object', default: {}, description: 'Claims set when the credential has none (e.g. plan: free).' },
      },
    },
    revocation: {
      type: 'object', additionalProperties: false, default: {},
      description: 'Deny list, applied on every reload: no new tokens, and live tokens refused with 403 GW_ERR_AUTH_REVOKED.',
      properties: {
        subjects: { type: 'array', items: { type: 'string', minLength: 1 }, default: [] },
        tokenIds: { type: 'array', items: { type: 'string', minLength: 1 }, default: [], description: 'Token `jti`s (emergencies).' },
        file: { type: 'string', minLength: 1, description: 'YAML/JSON {subjects: [...], tokenIds: [...]}, relative to the config directory; merged with the inline lists.' },
      },
    },
  },
} as const satisfies JsonSchema;
