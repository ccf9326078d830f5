/**
 * The contracts between the core and plugins. A plugin is a named factory that validates its
 * params once (JSON Schema, at load), builds a per-request `Step` once (`create`), and is never
 * consulted again until the next load. Everything a step does per request goes through the
 * `Exchange`.
 *
 * Why one file over 250 lines: it is the plugin contract (types only, no code), read as one document
 * beside docs/plugins.md.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { Registry } from 'prom-client';
import type { ErrorCode, GatewayError } from './errors.ts';
import type { SharedStore } from './store/types.ts';

export type JsonValue = string | number | boolean | null | JsonValue[] | { [k: string]: JsonValue };
export type JsonObject = { [k: string]: JsonValue };
/** A JSON Schema document (draft 2020-12 subset that ajv understands). */
export type JsonSchema = Record<string, unknown>;

/** Where a request goes: chosen by the core from the model, then possibly changed by steps. */
export interface Route {
  /** Logical model the client asked for (after aliasing), e.g. `ghost-small`. */
  model: string;
  /** Name of the upstream in `gateway.config.yaml` the request is sent to. */
  upstream: string;
  /** The model name sent upstream (a deployment of the logical model). */
  upstreamModel: string;
  /** Experiment arms chosen for this request, by experiment name (set by `ab-test`). */
  arms: Record<string, string>;
}

/**
 * What `when` conditions may read. Roots are fixed: `request`, `client`, `claims`, `body`,
 * `route`. `body` is the body as the client sent it (conditions never see mutations).
 */
export interface Facts {
  readonly request: {
    readonly method: string;
    readonly path: string;
    /** Lower-cased header names; only those allowed by `facts.headers` in the config. */
    readonly headers: Readonly<Record<string, string>>;
    readonly protocol: 'h2' | 'h1';
    readonly ip: string;
  };
  /** Parsed from the client's editor headers (see `client` in the config). */
  readonly client: {
    readonly editor: string | undefined;
    readonly editorVersion: string | undefined;
    readonly plugin: string | undefined;
    readonly version: string | undefined;
  };
  /** Verified token claims; empty until the `auth` step has run. */
  readonly claims: Readonly<Record<string, unknown>>;
  readonly body: Readonly<JsonObject>;
  /** The current route (live view: later steps see earlier routing decisions). */
  readonly route: Readonly<Route>;
}

export type FactRoot = keyof Facts;
export const FACT_ROOTS: readonly FactRoot[] = ['request', 'client', 'claims', 'body', 'route'];

/** A reply a step sends instead of forwarding (e.g. 426 upgrade, 429 rate limit). */
export interface LocalReply {
  status: number;
  body: Record<string, unknown>;
  headers?: Record<string, string>;
}

/** How an exchange ended, for `done` and metrics. */
export type Outcome =
  | 'ok'                 // complete response relayed
  | 'local'              // answered by a step (LocalReply or GatewayError from a step)
  | 'client_cancelled'   // the client reset/closed before the end
  | 'client_stalled'     // the client took no bytes for limits.clientStallMs: cancelled, reset
  | 'cancelled_before_forward' // client gone before we sent anything upstream
  | 'superseded'         // cancelled by a newer request (supersede plugin)
  | 'upstream_error'     // failure before the first byte: coded error to client
  | 'upstream_aborted'   // failure after the first byte: stream ended abnormally
  | 'error';             // gateway bug: 500

/** The per-request object every step sees. */
export interface Exchange {
  /** Request id (client's `x-request-id` if sane, else generated). Sent upstream and back. */
  readonly id: string;
  readonly facts: Facts;
  /** Fires the instant the client's stream or connection is gone (or the exchange is cancelled). */
  readonly signal: AbortSignal;
  /** `performance.now()` when the request arrived. */
  readonly startedAt: number;
  /** `performance.now()` when the first response body byte was relayed to the client; 0 until then. */
  readonly firstByteAt: number;
  /**
   * The client's raw `Authorization` header, for the `auth` step only. Deliberately not a fact
   * (conditions cannot read it) and never forwarded upstream; steps must not copy it anywhere.
   */
  readonly authorization: string | undefined;
  /** Mutable route: set `upstream`/`upstreamModel`/`arms` to steer the request. */
  readonly route: Route;
  /** The working body (read-only view; use `setBody`/`removeBody` to change it). */
  readonly body: Readonly<JsonObject>;
  /** Set a value at a JSON Pointer (RFC 6901) in the working body; creates objects on the way. */
  setBody(pointer: string, value: JsonValue): void;
  /** Remove the value at a JSON Pointer; returns whether something was removed. */
  removeBody(pointer: string): boolean;
  /** Extra headers for the upstream request (lower-case names). */
  readonly upstreamHeaders: Record<string, string>;
  /** Extra headers for the client response (lower-case names). */
  readonly responseHeaders: Record<string, string>;
  /** Metric labels steps may set (e.g. `arm`); values must come from config, not from clients. */
  readonly labels: Record<string, string>;
  /** Record verified claims (the `auth` step). */
  setClaims(claims: Record<string, unknown>): void;
  /** End this exchange now: reset upstream, answer the client with `code` if nothing was sent yet. */
  cancel(code: ErrorCode): void;
  /** Per-exchange scratch space for steps, keyed by step (use a Symbol or your plugin name). */
  readonly locals: Map<unknown, unknown>;
}

/** The request as it is about to go upstream (after every step ran). */
export interface OutboundRequest {
  readonly upstream: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

export type StepResult = void | undefined | LocalReply;

/**
 * A per-request step. Every phase is optional: absent means pass-through, and the core only
 * calls the phases a step defines (it sorts steps by phase at load).
 */
export interface Step {
  /** Before forwarding. Return a LocalReply (or throw a GatewayError) to answer locally. */
  request?(ex: Exchange): StepResult | Promise<StepResult>;
  /** After every `request` phase, right before the bytes go upstream (e.g. mirroring). */
  forwarding?(ex: Exchange, out: OutboundRequest): void;
  /** Upstream response headers arrived. */
  responseHeaders?(ex: Exchange, status: number, headers: IncomingHttpHeaders): void;
  /** One SSE `data:` payload (only for steps that define this: the core parses SSE only then). */
  responseEvent?(ex: Exchange, data: string): void;
  /** The exchange ended (any outcome). Must not throw. */
  done?(ex: Exchange, outcome: Outcome): void;
}

/** What `create` gets: load-time services. */
export interface PluginContext {
  /** `file:line` of the step, for messages. */
  readonly where: string;
  /** Folder of the policy file this step is in (relative paths in params resolve here). */
  readonly configDir: string;
  readonly log: Logger;
  readonly metrics: Registry;
  /** Names of configured upstreams. */
  readonly upstreamNames: ReadonlySet<string>;
  /** Model names clients may use (logical names and their aliases) → the logical model (`model`) and its default route. */
  readonly models: ReadonlyMap<string, { model: string; upstream: string; upstreamModel: string }>;
  /** A client for an upstream (for mirrors and shadows). Throws a config error if unknown. */
  upstream(name: string): UpstreamClient;
  /** The compiled auth runtime (token verification), or undefined when auth is not configured. */
  readonly auth: AuthRuntime | undefined;
  /**
   * The store shared by every worker and instance (`store.redis`), or undefined when state is
   * in process only. Its calls are bounded and may answer `undefined`: then decide in process.
   */
  readonly store: SharedStore | undefined;
  /**
   * State that survives reloads (e.g. rate-limit buckets), keyed by plugin name + `key`.
   * `init` runs once for the gateway's life.
   */
  shared<T>(key: string, init: () => T): T;
  /** A config error located at this step (optionally at a params path like `targets[1].weight`). */
  error(message: string, paramsPath?: string): GatewayError;
  /** Register cleanup for when a reload retires this step (after its in-flight requests end). */
  onClose(fn: () => void | Promise<void>): void;
}

export interface PluginDefinition<P = unknown> {
  /** kebab-case; same as the folder under plugins/ and the `use:` value in YAML. */
  readonly name: string;
  /** One line, shown by `ghostgate plugins` and in the generated policy schema. */
  readonly description: string;
  /** JSON Schema for `params`; validated once per load, with defaults applied. */
  readonly paramsSchema: JsonSchema;
  /** Build the per-request step. Runs once per load. Throw `ctx.error(...)` for bad params. */
  create(params: P, ctx: PluginContext): Step | Promise<Step>;
}

/** Identity function that gives a plugin definition its types. */
export function definePlugin<P>(def: PluginDefinition<P>): PluginDefinition<P> {
  return def;
}

/** A response from an upstream, at headers time. */
export interface UpstreamResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Readable;
  /** ms from send to response headers. */
  readonly ttfbMs: number;
  /**
   * At 'end': whether the upstream really finished the response. Node emits 'end' on an h2
   * stream even when its session died mid-response, so 'end' alone is not proof.
   */
  complete(): boolean;
}

/** What the upstream client needs of a cancellation signal; an AbortSignal is one. */
export interface CancelSignal {
  readonly aborted: boolean;
  addEventListener(type: 'abort', fn: () => void, opts?: { once?: boolean }): void;
  removeEventListener(type: 'abort', fn: () => void): void;
}

export interface UpstreamSendOptions {
  path: string;
  headers: Record<string, string>;
  body: Buffer;
  /** Aborting resets the upstream stream (CANCEL) at once. An AbortSignal, or any CancelSignal. */
  signal?: CancelSignal;
  /** Overrides the upstream's configured time to first byte. */
  firstByteTimeoutMs?: number;
  /**
   * Who the request is for (the client's address, when `limits.maxInflightPerClientIp` is on): one
   * owner may hold at most half of an HTTP/2 upstream pool's streams (core/upstream/h2-pool.ts).
   */
  owner?: string;
}

/** The core's client for one configured upstream (pool + credential). */
export interface UpstreamClient {
  readonly name: string;
  /** Resolves when response headers arrive; rejects with a GatewayError (coded) otherwise. */
  send(opts: UpstreamSendOptions): Promise<UpstreamResponse>;
}

/** Token verification as the `auth` step uses it (implemented in core/auth). */
export interface AuthRuntime {
  /** Verify a bearer token; returns its claims or throws a GatewayError (GW_ERR_AUTH_*). */
  verify(token: string): Record<string, unknown> | Promise<Record<string, unknown>>;
  /** Whether a subject / token id is on the deny list. */
  isRevoked(sub: string | undefined, jti: string | undefined): boolean;
  /**
   * The error for a request with no usable token (counted in `ghostgate_auth_failures_total`,
   * with the RFC 6750 challenge header). The `auth` step throws it.
   */
  reject(code: 'GW_ERR_AUTH_MISSING_TOKEN' | 'GW_ERR_AUTH_MALFORMED_TOKEN'): GatewayError;
}

export interface Logger {
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
  debug(obj: object | string, msg?: string): void;
}
