/**
 * auth: verify the client's short-lived token (`authorization: Bearer <token>`) and record its
 * claims, so later `when` conditions can read `claims.sub`, `claims.plan`, ... Verification is
 * local (signature with keys loaded at config load, exp/nbf with clock skew, issuer, audience,
 * algorithm allow-list, revocation) and cached per token until it expires.
 *
 * The token is read from the raw request header, never from `facts` (conditions must not see
 * credentials), and is not copied anywhere: the core never forwards the client's Authorization.
 */
import { bearerToken, definePlugin } from '../../core/plugin-api.ts';
import type { Exchange, FromSchema, JsonSchema, StepResult } from '../../core/plugin-api.ts';


/**
 * The raw `authorization` request header. Contract with the core: the Exchange exposes it as
 * `authorization` (outside `facts`). Kept in one place so the accessor is easy to change.
 */
export function authorizationHeader(ex: Exchange): string | string[] | undefined {
  return ex.authorization;
}

const paramsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    optional: { type: 'boolean', default: false, description: 'Requests with no token pass with empty claims; invalid tokens are still refused.' },
  },
} as const satisfies JsonSchema;

/** The params after validation (defaults applied), derived from the schema. */
export type AuthParams = FromSchema<typeof paramsSchema>;

export default definePlugin<AuthParams>({
  name: 'auth',
  description: 'Verify the bearer token (signature, expiry, issuer, audience, revocation) and expose its claims to later steps.',
  paramsSchema,
  create(params, ctx) {
    const auth = ctx.auth;
    if (!auth) throw ctx.error('auth is not configured: add an `auth:` section to gateway.config.yaml (see docs/auth.md)');
    const optional = params.optional === true;
    return {
      request: function authenticate(ex: Exchange): StepResult | Promise<StepResult> {
        const token = bearerToken(authorizationHeader(ex));
        if (token === null) throw auth.reject('GW_ERR_AUTH_MALFORMED_TOKEN');
        if (token === undefined) {
          if (optional) return;
          throw auth.reject('GW_ERR_AUTH_MISSING_TOKEN');
        }
        const claims = auth.verify(token);
        if (claims instanceof Promise) return claims.then((c) => { ex.setClaims(c); });
        ex.setClaims(claims);
      },
    };
  },
});
