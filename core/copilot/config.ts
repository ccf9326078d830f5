/**
 * The `copilot:` config section: a front door that GitHub's Copilot language server (the LSP the
 * VS Code, Neovim and JetBrains Copilot plugins run) accepts as its "GitHub API". Schema, model
 * and the load-time compile; the routes are in `./routes.ts`.
 */
import type { FromSchema } from 'json-schema-to-ts';
import type { JsonSchema } from '../types.ts';
import { GatewayError } from '../errors.ts';
import { normalizeAuthConfig, refreshIn } from '../auth/config.ts';

/** The four URLs the token reply hands the client (`endpoints` in Copilot's token envelope). */
export type EndpointName = keyof CopilotConfig['endpoints'];
export const ENDPOINT_NAMES: readonly EndpointName[] = ['api', 'proxy', 'telemetry', 'origin-tracker'];


const url = { type: 'string', pattern: '^https?://[^/?#\\s]+(/[^?#\\s]*)?$', maxLength: 2048 } as const;

/**
 * The section's schema, and the source of its type (`CopilotConfig`). `endpoints`: what the token
 * reply sends; each one left out is `api` when that is set, else the origin the request arrived
 * on (`https://` on the TLS listener, `http://` on the cleartext one, with the request's own host
 * and port): right behind a load balancer or a DNS name only when that forwards the Host
 * unchanged, so set `api` there.
 */
export const copilotConfigSchema = {
  type: 'object',
  additionalProperties: false,
  default: {},
  description: 'A Copilot-compatible front door (token exchange, start-up calls) for GitHub\'s Copilot language server. See docs/copilot.md.',
  properties: {
    enabled: { type: 'boolean', default: false, description: 'Serve /copilot_internal/v2/token, /copilot_internal/*, /models, /embeddings/models, /telemetry' },
    endpoints: {
      type: 'object', additionalProperties: false, default: {},
      description: 'URLs sent in the token reply. Default: `api`, else the origin the request arrived on.',
      properties: { api: url, proxy: url, telemetry: url, 'origin-tracker': url },
    },
    experiments: { type: 'boolean', default: true, description: 'GET /telemetry answers {"Configs":[{"Id":"vscode","Parameters":{}}]} (else 404)' },
  },
} as const satisfies JsonSchema;

/** The `copilot:` section after validation (defaults applied), derived from its schema. */
export type CopilotConfig = FromSchema<typeof copilotConfigSchema>;

/** The client refreshes its token once `refresh_in` is below this, i.e. on every use. */
export const MIN_REFRESH_IN = 240;

/** What the routes need, built once per config load. */
export interface CompiledCopilot {
  /** Fixed endpoints (no trailing slash), or undefined: derive from the request. */
  readonly endpoints: Readonly<Record<EndpointName, string>> | undefined;
  /** Endpoints set in config, the others derived per request (only when `endpoints` is undefined). */
  readonly partial: Readonly<Partial<Record<EndpointName, string>>>;
  readonly experiments: boolean;
}

/**
 * Check and compile the section. Copilot needs the token exchange (the `auth:` section with API
 * keys or an identity provider) and a token that lives long enough that the client does not
 * refresh it on every use. Returns undefined when disabled.
 */
export function compileCopilot(c: CopilotConfig | undefined, auth: Record<string, unknown> | undefined): CompiledCopilot | undefined {
  if (!c || !c.enabled) return undefined;
  if (!auth) throw new GatewayError('GW_ERR_CONFIG_INVALID', ['copilot.enabled needs the auth: section (the token exchange with API keys or an identity provider)']);
  const a = normalizeAuthConfig(auth);
  if (!a.credentials.apiKeys && !a.credentials.oidc) {
    throw new GatewayError('GW_ERR_CONFIG_INVALID', ['copilot.enabled needs auth.credentials (apiKeys or oidc): the Copilot client signs in with one of them']);
  }
  const r = refreshIn(a.tokenTtl, a.refreshBefore);
  if (r <= MIN_REFRESH_IN) {
    throw new GatewayError('GW_ERR_CONFIG_INVALID', [`copilot.enabled needs refresh_in above ${MIN_REFRESH_IN} s (the client refreshes a token on every use below that); auth.tokenTtl/refreshBefore give ${r} s`]);
  }
  const trim = (u: string): string => u.replace(/\/+$/, '');
  const partial: Partial<Record<EndpointName, string>> = {};
  for (const n of ENDPOINT_NAMES) if (c.endpoints[n] !== undefined) partial[n] = trim(c.endpoints[n]!);
  let endpoints: Record<EndpointName, string> | undefined;
  if (partial.api !== undefined) {
    const api = partial.api;
    endpoints = { api, proxy: partial.proxy ?? api, telemetry: partial.telemetry ?? api, 'origin-tracker': partial['origin-tracker'] ?? api };
  }
  return Object.freeze({ endpoints: endpoints && Object.freeze(endpoints), partial: Object.freeze(partial), experiments: c.experiments });
}
