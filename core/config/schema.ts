/**
 * JSON Schemas for `gateway.config.yaml` and policy files. The same schemas validate at load
 * (ajv, defaults applied), drive `ghostgate validate`, and are written to docs/schema/ for
 * editors (`ghostgate schema`), with each plugin's params schema merged into the step schema.
 *
 * Why one file over 250 lines: it is data (the schemas themselves), kept in one place so the
 * generated docs/schema/*.json and the derived types (json-schema-to-ts) have one source.
 */
import { authConfigSchema } from '../auth/schema.ts';
import { copilotConfigSchema } from '../copilot/config.ts';
import type { JsonSchema, PluginDefinition } from '../types.ts';

const secretRef = {
  description: 'Where a secret is read from: an environment variable or a file (never inline).',
  oneOf: [
    { type: 'object', required: ['env'], additionalProperties: false, properties: { env: { type: 'string', minLength: 1 } } },
    { type: 'object', required: ['file'], additionalProperties: false, properties: { file: { type: 'string', minLength: 1 } } },
  ],
} as const;
const port = { type: 'integer', minimum: 0, maximum: 65535 } as const;
const host = { type: 'string', minLength: 1, default: '127.0.0.1' } as const;
const ms = <D extends number>(def: D, description: string) => ({ type: 'integer', minimum: 0, default: def, description }) as const;
const headerName = { type: 'string', pattern: '^[a-z0-9!#$%&\'*+.^_`|~-]+$' } as const;

const upstream = {
  type: 'object',
  required: ['url'],
  additionalProperties: false,
  properties: {
    url: { type: 'string', pattern: '^https?://[^/]+', description: 'Base URL of the upstream, e.g. http://127.0.0.1:8000' },
    protocol: { enum: ['h2c', 'h2', 'http1'], description: 'Default: h2c for http://, h2 for https://' },
    pool: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        size: { type: 'integer', minimum: 1, maximum: 1024, description: 'Sessions (h2) or sockets (http1). Default 2 / 64.' },
        pingIntervalMs: ms(10_000, 'PING every session taking streams (busy or idle) this often; one still unanswered at the next PING closes the session; 0 = never'),
        warm: { type: 'boolean', default: true, description: 'Open connections at start and after reload' },
      },
    },
    timeouts: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        connectMs: ms(3_000, 'Connection handshake budget (h2: until the upstream\'s SETTINGS arrive)'),
        firstByteMs: ms(30_000, 'Request sent → response headers'),
        idleMs: ms(60_000, 'Longest silence between response chunks'),
      },
    },
    credential: {
      type: 'object', required: ['secret'], additionalProperties: false,
      description: 'The upstream\'s own key, added to every request; the client\'s Authorization is never forwarded.',
      properties: {
        header: { ...headerName, default: 'authorization' },
        prefix: { type: 'string', default: 'Bearer ' },
        secret: secretRef,
      },
    },
    forwardHeaders: { type: 'array', items: headerName, default: ['user-agent'], description: 'Client headers passed upstream' },
    tls: {
      type: 'object', additionalProperties: false,
      properties: { ca: secretRef, servername: { type: 'string' }, rejectUnauthorized: { type: 'boolean', default: true } },
    },
    maxRetries: { type: 'integer', minimum: 0, maximum: 10, default: 3, description: 'Retries, each on another session, of streams the upstream did not process (refused, ENHANCE_YOUR_CALM, above GOAWAY, on a dead session)' },
  },
} as const;

/**
 * The schema of gateway.config.yaml, and the one source of its type: `GatewayConfig`
 * (core/config/model.ts) is derived from it with json-schema-to-ts's `FromSchema`. Keep it a
 * literal (`as const`): a property with a `default` becomes a required field of the type.
 */
export const gatewayConfigSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'ghostgate gateway.config.yaml',
  type: 'object',
  additionalProperties: false,
  required: ['upstreams', 'models'],
  properties: {
    $schema: { type: 'string' },
    listen: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        host, port: { ...port, default: 8080 },
        tls: {
          type: 'object', additionalProperties: false, required: ['port', 'cert', 'key'],
          properties: { host, port, cert: secretRef, key: secretRef },
        },
      },
    },
    admin: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        host, port: { ...port, default: 9090 }, enabled: { type: 'boolean', default: true },
        credential: { ...secretRef, description: 'Bearer secret the state-changing admin routes (POST /-/token, POST /-/reload) require: `Authorization: Bearer <secret>`. Needed for minting outside auth.dev, and for an admin plane on a non-loopback address.' },
        insecureAllowNoCredential: { type: 'boolean', default: false, description: 'Allow an admin plane on a non-loopback address without a credential (anyone who reaches it can reload the config). Off by default: such a config is refused.' },
      },
    },
    http2: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        maxConcurrentStreams: { type: 'integer', minimum: 1, maximum: 100_000, default: 256 },
        streamResetBurst: { type: 'integer', minimum: 1, default: 10_000 },
        streamResetRate: { type: 'integer', minimum: 1, default: 1_000 },
        rapidResetLimit: { type: 'integer', minimum: 1, default: 1000, description: 'Resets of streams not answered yet (at any age) in 1-2 s, when also over half the streams opened then, that get a session GOAWAY(ENHANCE_YOUR_CALM)' },
        maxInflightPerSession: { type: 'integer', minimum: 1, maximum: 100_000, default: 128, description: 'Streams one client session may have in flight upstream; more get 429 GW_ERR_REQ_TOO_MANY_IN_FLIGHT' },
        sessionIdleTimeoutMs: ms(600_000, 'Close (GOAWAY) a client session on which no request completed for this long; PINGs do not count; streams in flight finish. 0 = never'),
      },
    },
    limits: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        bodyBytes: { type: 'integer', minimum: 1024, default: 1_048_576 },
        headerBytes: { type: 'integer', minimum: 1024, default: 16_384 },
        headersTimeoutMs: ms(30_000, 'A deadline: an HTTP/1.1 request head must be complete within this of its first byte (the first request: of the TCP accept, shared with the protocol sniffing or the TLS handshake)'),
        bodyTimeoutMs: { type: 'integer', minimum: 1, default: 30_000, description: 'A deadline: a request body must be complete within this of its head (HTTP/1.1 and HTTP/2); else 408 and the connection is closed (h1) or the stream reset (h2)' },
        maxConnections: { type: 'integer', minimum: 0, default: 0, description: 'Client connections open at once on the data plane (both ports); the excess is closed on accept. 0 = automatic: the open-file limit less a reserve for the admin plane and upstreams. A value above that budget is lowered to it' },
        maxConnectionsPerIp: { type: 'integer', minimum: 0, default: 256, description: 'Client connections open at once from one IP address; 0 = no per-IP cap. Raise it when many clients share an address (NAT, a load balancer speaking HTTP/1.1)' },
        jsonDepth: { type: 'integer', minimum: 2, maximum: 10_000, default: 64, description: 'Deepest JSON nesting accepted in a request body; deeper gets 400 GW_ERR_REQ_JSON_TOO_DEEP' },
        maxInflightPerClientIp: { type: 'integer', minimum: 0, maximum: 1_000_000, default: 128, description: 'Requests one client IP address may have in flight upstream at once, across all its connections; more get 429 GW_ERR_REQ_TOO_MANY_IN_FLIGHT. 0 = no per-IP cap. Raise it, or set 0, behind a load balancer (all traffic from its address)' },
        clientStallMs: ms(10_000, 'A response whose client takes no byte for this long is cancelled upstream and reset; 0 = never'),
        bodyBufferBytesPerClientIp: { type: 'integer', minimum: 0, default: 33_554_432, description: 'Bytes of request bodies being received (not complete yet) that one client IP address may hold, across its connections; a body that would go over gets 429 GW_ERR_REQ_TOO_MANY_IN_FLIGHT. Below bodyBytes counts as bodyBytes. 0 = no per-IP cap' },
        bodyBufferBytes: { type: 'integer', minimum: 0, default: 268_435_456, description: 'Bytes of request bodies being received (not complete yet) in the whole process; a body that would go over gets 503 GW_ERR_SERVER_OVERLOADED. Below bodyBytes counts as bodyBytes. 0 = no cap' },
      },
    },
    facts: {
      type: 'object', additionalProperties: false, default: {},
      properties: { headers: { type: 'array', items: headerName, default: ['user-agent', 'editor-version', 'editor-plugin-version', 'x-ghostgate-document', 'x-copilot-speculative', 'openai-intent', 'vscode-sessionid'] } },
    },
    client: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        editorHeader: { ...headerName, default: 'editor-version' },
        pluginHeader: { ...headerName, default: 'editor-plugin-version' },
      },
    },
    upstreams: { type: 'object', minProperties: 1, propertyNames: { pattern: '^[a-z0-9][a-z0-9_.-]*$' }, additionalProperties: upstream },
    models: {
      type: 'object', minProperties: 1,
      additionalProperties: {
        type: 'object', additionalProperties: false,
        description: 'A logical model: one upstream (`upstream`), or several deployments with failover (`deployments`).',
        properties: {
          upstream: { type: 'string' },
          upstreamModel: { type: 'string' },
          aliases: { type: 'array', items: { type: 'string' }, default: [] },
          deployments: {
            type: 'array', minItems: 1, maxItems: 32,
            description: 'Units of capacity serving this model. Requests go to the highest-priority available deployments by weight; one that fails before the first byte reached the client is retried on the next.',
            items: {
              type: 'object', required: ['upstream'], additionalProperties: false,
              properties: {
                upstream: { type: 'string' },
                model: { type: 'string', minLength: 1, description: 'Model name this upstream expects. Default: upstreamModel, else the logical name' },
                region: { type: 'string', default: '' },
                weight: { type: 'number', exclusiveMinimum: 0, default: 1, description: 'Share of traffic within its priority' },
                priority: { type: 'integer', minimum: 0, default: 0, description: 'Lower is preferred; a priority is used only while none of a lower number is available' },
                maxConcurrent: { type: 'integer', minimum: 0, default: 0, description: 'Requests in flight on it at most (its capacity); at the cap the next deployment is used. 0 = no cap' },
              },
            },
          },
          failover: {
            type: 'object', additionalProperties: false, default: {},
            description: 'Failover across deployments (before the first byte reached the client) and passive outlier ejection',
            properties: {
              attempts: { type: 'integer', minimum: 1, maximum: 10, default: 3, description: 'Attempts per request, each on another deployment' },
              budgetMs: ms(30_000, 'Time for all attempts before the first byte; an attempt\'s first-byte timeout is cut to what is left'),
              ejection: {
                type: 'object', additionalProperties: false, default: {},
                description: 'With two deployments or more: eject a failing deployment for a back-off that doubles (baseMs..maxMs), then let one probe request through',
                properties: {
                  consecutiveFailures: { type: 'integer', minimum: 0, default: 5, description: 'Failures in a row that eject; 0 = off' },
                  errorRate: { type: 'number', minimum: 0, maximum: 1, default: 0.5, description: 'Failed share within windowMs (with at least minRequests) that ejects; 0 = off' },
                  minRequests: { type: 'integer', minimum: 1, default: 20 },
                  windowMs: ms(10_000, 'Window for errorRate'),
                  baseMs: ms(5_000, 'First ejection'),
                  maxMs: ms(60_000, 'Longest ejection'),
                },
              },
            },
          },
        },
      },
    },
    defaultModel: { type: 'string' },
    policies: { type: 'array', items: { type: 'string' }, default: ['policies/*.yaml'] },
    plugins: { type: 'array', items: { type: 'string', minLength: 1 }, default: [], description: 'Plugins outside plugins/: a folder or file relative to this file (./my-plugins/header-gate), or an installed package name. Each default-exports a definePlugin({...}) from ghostgate/plugin' },
    modelServer: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        enabled: { type: 'boolean', default: false },
        host, port: { ...port, default: 8000 },
        ttftMs: ms(120, 'Simulated time to first token'),
        tokenMs: ms(15, 'Simulated time per token'),
        tokens: { type: 'integer', minimum: 1, default: 24 },
      },
    },
    health: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        slo: { type: 'number', exclusiveMinimum: 0, maximum: 1, default: 0.99 },
        recoverAt: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
        windowSeconds: { type: 'integer', minimum: 1, maximum: 3600, default: 30 },
        minRequests: { type: 'integer', minimum: 0, default: 20 },
        probe: {
          type: 'object', additionalProperties: false, default: {},
          description: 'While voted out, probe the default model with a one-token completion and count the outcome in the window, so the instance stays out while its model fails and comes back once it answers (without probes it came back when its failures aged out, and flapped)',
          properties: {
            intervalMs: ms(2000, 'Time between probes while voted out; 0 = no probes'),
            timeoutMs: ms(2000, 'A probe with no response header within this counts as failed'),
          },
        },
      },
    },
    server: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        stepTimeoutMs: { type: 'integer', minimum: 1, maximum: 600_000, default: 5_000, description: 'A policy step whose request phase returns a promise must settle it within this; else the request ends with 504 GW_ERR_POLICY_STEP_TIMEOUT, logged and counted in ghostgate_plugin_failures_total. Hot: applies at the next reload.' },
        fastLane: { type: 'boolean', default: true, description: 'Serve completion requests (HTTP/2 and HTTP/1.1) straight from the raw stream or Node\'s request (the fast lanes) instead of through Fastify\'s request objects. Same behaviour either way, less CPU per request on. Hot: applies to new requests at the next reload.' },
        workers: {
          oneOf: [{ type: 'integer', minimum: 1, maximum: 256 }, { const: 'auto' }], default: 1,
          description: 'Processes serving the data plane (each binds the data-plane ports with SO_REUSEPORT; the primary serves the admin plane). auto = one per core. `ghostgate start --workers N` overrides it. Restart to change',
        },
        semiSpaceMb: { type: ['integer', 'null'], minimum: 0, maximum: 1024, default: 8, description: 'V8\'s young-generation semi-space size in MB (Node\'s --max-semi-space-size) for every `ghostgate start` process: a smaller one makes each scavenge (young-generation GC pause) shorter, the gateway\'s latency tail (docs/operations.md#young-generation). 0 or null = Node\'s default. A --max-semi-space-size the user gives Node (its arguments or NODE_OPTIONS) wins. Restart to change' },
        keepAsyncResourceProperty: { type: 'boolean', default: false, description: 'Leave Node\'s AsyncResource.prototype.bind as it is. By default `ghostgate start` (each of its processes) replaces it with the same function minus the deprecated asyncResource property (DEP0172) of bound functions, which makes every HTTP/2 upstream stream survive young-generation GCs (docs/operations.md#node-runtime-patch). Restart to change' },
        onUnhandledRejection: { enum: ['log', 'exit'], default: 'log', description: 'What `ghostgate start` (each of its processes) does with a promise rejection nothing handled (a plugin\'s or a library\'s bug): log = log it once per distinct error, count it in ghostgate_unhandled_rejections_total and keep serving; exit = log it and exit 1, as Node does (docs/operations.md#unhandled-rejections). Restart to change' },
      },
    },
    reload: {
      type: 'object', additionalProperties: false, default: {},
      properties: { watch: { type: 'boolean', default: true }, debounceMs: ms(200, 'Wait for edits to settle') },
    },
    shutdown: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        drainDelayMs: ms(0, 'On SIGTERM, fail /_ping for this long before closing listeners, so load balancers stop sending first (e.g. 2-3 health-check intervals)'),
        graceMs: ms(10_000, 'Then let in-flight requests finish for at most this long'),
      },
    },
    logging: {
      type: 'object', additionalProperties: false, default: {},
      properties: { level: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' } },
    },
    passthrough: {
      type: 'array', default: [],
      description: 'OpenAI routes off the completion path (e.g. /v1/embeddings, /v1/moderations) forwarded as they are to a named upstream with its credential, behind auth (docs/configuration.md#passthrough). The list of paths applies at start.',
      items: {
        type: 'object', required: ['path', 'upstream'], additionalProperties: false,
        properties: {
          path: { type: 'string', pattern: '^/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$', maxLength: 256, description: 'Request path forwarded, with everything under it (e.g. /v1/embeddings)' },
          upstream: { type: 'string', minLength: 1, description: 'Name of an upstream under `upstreams:`; its credential replaces the client\'s' },
          methods: { type: 'array', items: { enum: ['GET', 'POST', 'DELETE'] }, minItems: 1, uniqueItems: true, default: ['POST'], description: 'Methods forwarded; others get 404' },
          auth: { type: 'boolean', default: true, description: 'Require a valid gateway token (as the `auth` step does). Needs an `auth:` section; false forwards unauthenticated requests with the upstream\'s credential (an open relay: say so on purpose).' },
        },
      },
    },
    auth: authConfigSchema,
    copilot: copilotConfigSchema,
    store: {
      type: 'object', additionalProperties: false, default: {},
      description: 'Where rate-limit buckets and the supersede table live. Default: in each process. With `redis`: shared by every worker and instance using that Redis (docs/operations.md).',
      properties: {
        redis: {
          type: 'object', required: ['url'], additionalProperties: false,
          properties: {
            url: {
              description: 'redis://[user:password@]host:port[/db] or rediss:// (TLS). A secret: give it as ${REDIS_URL} or {env: NAME} / {file: path}; never printed. An inline password in the YAML is refused.',
              oneOf: [{ type: 'string', pattern: '^rediss?://' }, secretRef],
            },
            timeoutMs: { type: 'integer', minimum: 1, maximum: 1000, default: 5, description: 'Longest a request waits on Redis; past it the step decides in process (fail open) and the store counts as down until a probe answers' },
            retryMs: { type: 'integer', minimum: 10, maximum: 60_000, default: 500, description: 'While Redis is down or slow: how often to reconnect and probe it' },
            keyPrefix: { type: 'string', maxLength: 64, pattern: '^[^\\s]*$', default: 'ghostgate:', description: 'Prefix of every Redis key and channel (fleets sharing one Redis use different prefixes)' },
          },
        },
      },
    },
  },
} as const satisfies JsonSchema;

const stepBaseSchema = {
  type: 'object', required: ['use'], additionalProperties: false,
  properties: {
    use: { type: 'string' },
    name: { type: 'string' },
    when: { description: 'json-logic condition over the facts (request, client, claims, body, route)' },
    params: { type: 'object', default: {} },
  },
} as const;

/** The policy file schema without plugins (`use:` any string); the source of `PolicyConfig`. */
export const policyBaseSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'ghostgate policy file',
  type: 'object', required: ['name', 'steps'], additionalProperties: false,
  properties: {
    $schema: { type: 'string' },
    name: { type: 'string', pattern: '^[a-z0-9][a-z0-9_.-]*$' },
    description: { type: 'string' },
    enabled: { type: 'boolean', default: true },
    match: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        paths: { type: 'array', items: { enum: ['/v1/completions', '/v1/chat/completions', '/v1/engines/:model/completions'] } },
        models: { type: 'array', items: { type: 'string' } },
      },
    },
    steps: { type: 'array', items: stepBaseSchema },
  },
} as const satisfies JsonSchema;

/** The policy file schema; with `plugins`, each `use:` gets its params schema (for editors). */
export function policySchema(plugins: ReadonlyArray<PluginDefinition<unknown>> = []): JsonSchema {
  if (plugins.length === 0) return policyBaseSchema;
  const step: JsonSchema = {
    ...stepBaseSchema,
    properties: { ...stepBaseSchema.properties, use: { enum: plugins.map((p) => p.name) } },
    allOf: plugins.map((p) => ({
      if: { properties: { use: { const: p.name } } },
      then: { properties: { params: p.paramsSchema }, description: p.description },
    })),
  };
  return { ...policyBaseSchema, properties: { ...policyBaseSchema.properties, steps: { type: 'array', items: step } } };
}
