/**
 * The `auth:` section's types (core/auth/config.ts) are derived from its schema
 * (core/auth/schema.ts); these assertions pin what core/auth relies on (`npx tsc -p .`).
 */
import type { AuthConfig, OidcConfig, SigningKeyConfig, TokenAlg } from '../../core/auth/config.ts';
import type { Equal, Expect } from './equal.ts';

type Secret = { env: string } | { file: string };
type IdpAlg = 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'ES256' | 'ES384' | 'ES512' | 'EdDSA' | 'Ed25519';

export type Checks = [
  Expect<Equal<TokenAlg, 'EdDSA' | 'ES256'>>,
  // anyOf [privateKey] / [publicKey]: a key has at least one of them.
  Expect<Equal<SigningKeyConfig,
    | { kid: string; alg: TokenAlg; privateKey: Secret; publicKey?: Secret; active: boolean }
    | { kid: string; alg: TokenAlg; privateKey?: Secret; publicKey: Secret; active: boolean }>>,
  Expect<Equal<OidcConfig, { issuer: string; audience: string | string[]; jwksUri: string; algorithms: IdpAlg[]; subjectClaim: string; timeoutMs: number; cooldownMs: number; cacheMaxAgeMs: number }>>,
  Expect<Equal<AuthConfig['tokenTtl'] | AuthConfig['refreshBefore'], number>>,
  Expect<Equal<AuthConfig['algorithms'], TokenAlg[]>>,
  Expect<Equal<AuthConfig['issuer'] | AuthConfig['audience'], string>>,
  Expect<Equal<AuthConfig['clockSkewSeconds'] | AuthConfig['maxTokenBytes'] | AuthConfig['cacheSize'], number>>,
  Expect<Equal<AuthConfig['dev'], boolean>>,
  Expect<Equal<AuthConfig['credentials'], { apiKeys?: Secret; oidc?: OidcConfig }>>,
  Expect<Equal<AuthConfig['claims'], { copy: string[]; defaults: { [k: string]: unknown } }>>,
  Expect<Equal<AuthConfig['revocation'], { subjects: string[]; tokenIds: string[]; file?: string }>>,
];
