/**
 * The one error catalog. Every error a client or an operator can see has a stable code
 * `GW_ERR_<AREA>_<PROBLEM>`, an HTTP status and a message. Codes are API: clients and operators
 * match on them, so never rename one; add a new one instead. `docs/errors.md` documents each
 * (a test checks that the two agree).
 */

export interface ErrorDef {
  /** HTTP status sent to the client (0 for config errors that never reach a client). */
  readonly status: number;
  /** Message; `%s` placeholders are filled from the `args` given at the throw site. */
  readonly message: string;
}

export const catalog = {
  // Request shape (data plane)
  GW_ERR_REQ_INVALID_JSON: { status: 400, message: 'Request body is not valid JSON' },
  GW_ERR_REQ_INVALID_BODY: { status: 400, message: 'Invalid request body: %s' },
  GW_ERR_REQ_BODY_TOO_LARGE: { status: 413, message: 'Request body is larger than %s bytes' },
  GW_ERR_REQ_JSON_TOO_DEEP: { status: 400, message: 'Request body JSON is nested deeper than %s levels' },
  GW_ERR_REQ_TOO_MANY_IN_FLIGHT: { status: 429, message: 'Too many requests in flight %s; retry when one ends' },
  GW_ERR_REQ_UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Content-Type must be application/json' },
  GW_ERR_REQ_UNSUPPORTED_TRANSFER_CODING: { status: 501, message: 'Transfer-Encoding "%s" is not supported; send the body with chunked alone, or with a Content-Length' },
  GW_ERR_REQ_UNSUPPORTED_ENCODING: { status: 415, message: 'Content-Encoding "%s" is not supported for this request body; send it uncompressed' },
  GW_ERR_REQ_NOT_FOUND: { status: 404, message: 'No route for %s %s' },
  GW_ERR_REQ_METHOD_NOT_ALLOWED: { status: 405, message: 'Method %s is not allowed on %s' },
  GW_ERR_REQ_BAD_REQUEST: { status: 400, message: 'Bad request: %s' },
  GW_ERR_REQ_HEADERS_TOO_LARGE: { status: 431, message: 'Request headers are too large' },
  GW_ERR_REQ_TIMEOUT: { status: 408, message: 'The request was not received in time' },
  GW_ERR_REQ_EXPECTATION_FAILED: { status: 417, message: 'The request\'s Expect header cannot be met; only 100-continue is supported' },
  // Routing
  GW_ERR_ROUTE_UNKNOWN_MODEL: { status: 404, message: 'Unknown model "%s"' },
  GW_ERR_ROUTE_NO_MODEL: { status: 400, message: 'Request names no model and no default model is configured' },
  // Upstream
  GW_ERR_UPSTREAM_CONNECT: { status: 502, message: 'Could not connect to upstream "%s"' },
  GW_ERR_UPSTREAM_UNAVAILABLE: { status: 503, message: 'Upstream "%s" is unavailable' },
  GW_ERR_UPSTREAM_NO_DEPLOYMENT: { status: 503, message: 'No deployment of model "%s" can take the request now (%s)' },
  GW_ERR_UPSTREAM_TIMEOUT: { status: 504, message: 'Upstream "%s" sent no response within %s ms' },
  GW_ERR_UPSTREAM_RESET: { status: 502, message: 'Upstream "%s" reset the request before responding' },
  GW_ERR_UPSTREAM_ABORTED: { status: 502, message: 'Upstream "%s" failed mid-response; the completion is incomplete' },
  GW_ERR_UPSTREAM_IDLE_TIMEOUT: { status: 504, message: 'Upstream "%s" went silent for %s ms mid-response; the completion is incomplete' },
  // Policy outcomes (local replies from plugins)
  GW_ERR_POLICY_REJECTED: { status: 403, message: 'Request rejected by policy: %s' },
  GW_ERR_POLICY_UPGRADE_REQUIRED: { status: 426, message: '%s' },
  GW_ERR_POLICY_RATE_LIMITED: { status: 429, message: 'Rate limit exceeded; retry after %s s' },
  GW_ERR_POLICY_SUPERSEDED: { status: 409, message: 'Superseded by a newer completion request for the same document' },
  GW_ERR_POLICY_STEP_FAILED: { status: 500, message: 'Policy step "%s" failed' },
  GW_ERR_POLICY_STEP_TIMEOUT: { status: 504, message: 'Policy step "%s" did not finish within %s ms' },
  // Authentication
  GW_ERR_AUTH_MISSING_TOKEN: { status: 401, message: 'Missing bearer token' },
  GW_ERR_AUTH_MALFORMED_TOKEN: { status: 401, message: 'Malformed bearer token' },
  GW_ERR_AUTH_TOKEN_TOO_LARGE: { status: 401, message: 'Bearer token is too large' },
  GW_ERR_AUTH_INVALID_SIGNATURE: { status: 401, message: 'Token signature is not valid' },
  GW_ERR_AUTH_ALGORITHM_NOT_ALLOWED: { status: 401, message: 'Token algorithm is not allowed' },
  GW_ERR_AUTH_UNKNOWN_KEY: { status: 401, message: 'Token is signed with an unknown key' },
  GW_ERR_AUTH_TOKEN_EXPIRED: { status: 401, message: 'Token has expired' },
  GW_ERR_AUTH_TOKEN_NOT_YET_VALID: { status: 401, message: 'Token is not yet valid' },
  GW_ERR_AUTH_CLAIM_MISMATCH: { status: 401, message: 'Token %s does not match' },
  GW_ERR_AUTH_REVOKED: { status: 403, message: 'Access has been revoked' },
  GW_ERR_AUTH_INVALID_CREDENTIAL: { status: 401, message: 'Credential is not valid' },
  GW_ERR_AUTH_IDP_UNAVAILABLE: { status: 503, message: 'Identity provider is unavailable; try again shortly' },
  GW_ERR_AUTH_NOT_CONFIGURED: { status: 404, message: 'Token exchange is not configured' },
  // Admin plane
  GW_ERR_ADMIN_UNAUTHORIZED: { status: 401, message: 'This admin route needs the admin credential: Authorization: Bearer <admin.credential>' },
  GW_ERR_ADMIN_MINT_FORBIDDEN: { status: 403, message: 'Minting tokens on the admin plane needs auth.dev: true or an admin credential (admin.credential)' },
  // Server
  GW_ERR_SERVER_SHUTTING_DOWN: { status: 503, message: 'Gateway is shutting down' },
  GW_ERR_SERVER_OVERLOADED: { status: 503, message: 'Gateway is overloaded' },
  GW_ERR_SERVER_INTERNAL: { status: 500, message: 'Internal gateway error' },
  GW_ERR_SERVER_LISTEN: { status: 0, message: 'Cannot listen on %s (%s): %s; it is set by %s' },
  // Cluster (ghostgate start --workers N): the primary's admin plane
  GW_ERR_CLUSTER_NO_WORKER: { status: 503, message: 'No worker process is ready to answer %s' },
  GW_ERR_CLUSTER_WORKER: { status: 503, message: 'Worker %s did not answer: %s' },
  // Configuration (validate, start, reload); status is what POST /-/reload answers with
  GW_ERR_CONFIG_READ: { status: 400, message: 'Cannot read %s: %s' },
  GW_ERR_CONFIG_YAML: { status: 400, message: 'YAML syntax error: %s' },
  GW_ERR_CONFIG_SCHEMA: { status: 400, message: '%s' },
  GW_ERR_CONFIG_ENV: { status: 400, message: 'Environment variable %s is not set and has no default' },
  GW_ERR_CONFIG_SECRET: { status: 400, message: 'Secret %s cannot be read: %s' },
  GW_ERR_CONFIG_UNKNOWN_PLUGIN: { status: 400, message: 'Unknown plugin "%s"' },
  GW_ERR_CONFIG_PLUGIN_PARAMS: { status: 400, message: 'Invalid params for plugin "%s": %s' },
  GW_ERR_CONFIG_PLUGIN_LOAD: { status: 400, message: 'Cannot load plugin %s: %s' },
  GW_ERR_CONFIG_PLUGIN_CREATE: { status: 400, message: 'Plugin "%s" (%s) could not build its step: %s' },
  GW_ERR_CONFIG_CONDITION: { status: 400, message: 'Invalid when condition: %s' },
  GW_ERR_CONFIG_UNKNOWN_UPSTREAM: { status: 400, message: 'Unknown upstream "%s"' },
  GW_ERR_CONFIG_UNKNOWN_MODEL: { status: 400, message: 'Unknown model "%s"' },
  GW_ERR_CONFIG_INVALID: { status: 400, message: '%s' },
  GW_ERR_CONFIG_RESTART_REQUIRED: { status: 400, message: '%s changed; it takes effect only after a restart' },
} as const satisfies Record<string, ErrorDef>;

export type ErrorCode = keyof typeof catalog;

/** Where in which file a config problem is. */
export interface SourceLocation { file: string; line?: number; column?: number; path?: string }

/** An error from the catalog. Throw it anywhere; the server turns it into `{error: {code, message}}`. */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Extra fields for the JSON body (never secrets). */
  readonly details: Record<string, unknown> | undefined;
  /** Response headers to add (e.g. Retry-After). */
  readonly headers: Record<string, string> | undefined;
  /** For config errors: where. */
  readonly location: SourceLocation | undefined;

  constructor(code: ErrorCode, args: ReadonlyArray<string | number> = [], extra: {
    details?: Record<string, unknown>; headers?: Record<string, string>; location?: SourceLocation; status?: number; message?: string;
  } = {}) {
    const def: ErrorDef = catalog[code];
    super(extra.message ?? format(def.message, args));
    this.name = 'GatewayError';
    this.code = code;
    this.status = extra.status ?? def.status;
    this.details = extra.details;
    this.headers = extra.headers;
    this.location = extra.location;
  }

  /** The client-facing JSON body. */
  toJSON(): { error: { code: ErrorCode; message: string } & Record<string, unknown> } {
    return { error: { code: this.code, message: this.message, ...this.details } };
  }

  /** `file:line: CODE message`, for operators. */
  describe(): string {
    const l = this.location;
    const where = l ? `${l.file}${l.line ? `:${l.line}` : ''}${l.column ? `:${l.column}` : ''}: ` : '';
    return `${where}${this.code} ${this.message}`;
  }
}

/** Several config problems at once: `validate` lists them all, reload refuses with all of them. */
export class ConfigErrors extends Error {
  readonly errors: GatewayError[];
  constructor(errors: GatewayError[]) {
    super(errors.map((e) => e.describe()).join('\n'));
    this.name = 'ConfigErrors';
    this.errors = errors;
  }
}

function format(template: string, args: ReadonlyArray<string | number>): string {
  let i = 0;
  return template.replace(/%s/g, () => String(args[i++] ?? ''));
}

/** Build the JSON body for a code without throwing (hot path: no stack trace). */
/** The content type of every JSON reply the gateway writes itself, on every plane (Fastify's own). */
export const JSON_TYPE = 'application/json; charset=utf-8';

export function errorBody(code: ErrorCode, args: ReadonlyArray<string | number> = []): string {
  return JSON.stringify({ error: { code, message: format(catalog[code].message, args) } });
}
