/**
 * The validated config model: what `gateway.config.yaml` and `policies/*.yaml` mean once
 * parsed, interpolated and checked against the schema (defaults applied). Layer two of three:
 * YAML → this model → the compiled Runtime.
 */
import type { JsonObject } from '../types.ts';
import type { CopilotConfig } from '../copilot/config.ts';

/** A secret is never written in YAML: it names where to read it from. */
export type SecretRef = { env: string } | { file: string };

export interface ListenConfig {
  /** Cleartext listener: h2c with prior knowledge, and HTTP/1.1. Default 127.0.0.1:8080. */
  host: string;
  port: number;
  /** Optional TLS listener: h2 via ALPN, falling back to HTTP/1.1. */
  tls?: { host: string; port: number; cert: SecretRef; key: SecretRef };
}

export interface Http2Settings {
  /** Streams one client session may have open at once. Default 256 (Node's default is 2^32-1). */
  maxConcurrentStreams: number;
  /**
   * nghttp2's RST_STREAM flood protection, per session: a bucket of `streamResetBurst` refilled at
   * `streamResetRate`/s. Editors cancel ~45% of requests, and one load balancer connection carries
   * many editors, so the defaults (10000, 1000/s) are far above Node's (1000, 33/s).
   */
  streamResetBurst: number;
  streamResetRate: number;
  /**
   * A session whose resets of streams not answered yet (at any age) over the last 1–2 s exceed
   * this, and are more than half of the streams it opened then, gets GOAWAY(ENHANCE_YOUR_CALM)
   * and is closed. Default 1000.
   */
  rapidResetLimit: number;
  /** Streams one client session may have in flight upstream; more get 429. Default 128. */
  maxInflightPerSession: number;
  /**
   * A client session on which no request completed for this long (ms) is closed gracefully
   * (GOAWAY; streams in flight finish). A request completes when the client has sent all of it;
   * PING and other control frames do not count. Default 10 minutes; 0 = never.
   */
  sessionIdleTimeoutMs: number;
}

export interface LimitsConfig {
  /** Largest request body (bytes). Default 1 MiB. */
  bodyBytes: number;
  /** Largest request header block (bytes), HTTP/1.1 on both ports and HTTP/2. Default 16 KiB. */
  headerBytes: number;
  /**
   * Deadline (ms) for an HTTP/1.1 request head, from its first byte (a new connection: from
   * accept); also the TLS handshake budget. Trickling bytes does not extend it. Default 30 s.
   */
  headersTimeoutMs: number;
  /** Deadline (ms) for a request body, from its head (HTTP/1.1 and HTTP/2). Default 30 s. */
  bodyTimeoutMs: number;
  /**
   * Client connections open at once on the data plane (both ports). 0 = automatic: the process's
   * open-file limit less a reserve (20%, at least 64) for the admin plane, upstreams and files.
   */
  maxConnections: number;
  /** Client connections open at once from one IP address. Default 256; 0 = no per-IP cap. */
  maxConnectionsPerIp: number;
  /** Deepest JSON nesting accepted in a request body (`{}` is 1). Default 64. */
  jsonDepth: number;
  /**
   * Requests one client IP may have in flight upstream at once, across all its connections (the
   * socket's address, not X-Forwarded-For). More get 429. 0 = no per-IP cap. Default 128.
   */
  maxInflightPerClientIp: number;
  /** A response whose client takes no byte for this long (ms) is cancelled upstream and reset. Default 10 s; 0 = never. */
  clientStallMs: number;
}

export interface UpstreamConfig {
  /** Base URL: `http://` (h2c or http1), `https://` (h2 via ALPN, or http1). */
  url: string;
  /** Wire protocol. Default: `h2c` for http URLs, `h2` for https URLs. */
  protocol: 'h2c' | 'h2' | 'http1';
  pool: {
    /** Long-lived sessions (h2) or keep-alive sockets (http1) per upstream. Default 2 (h2) / 64 (http1). */
    size: number;
    /** Send an HTTP/2 PING on idle sessions this often (ms) to keep them warm and detect dead peers. Default 10 s. */
    pingIntervalMs: number;
    /** Open the sessions at start (and after reload) before traffic arrives. Default true. */
    warm: boolean;
  };
  timeouts: {
    /** TCP+TLS+HTTP/2 handshake budget (ms). Default 3 s. */
    connectMs: number;
    /** From sending the request to the response headers (ms). Default 30 s. */
    firstByteMs: number;
    /** Longest silence between response chunks (ms). Default 60 s. */
    idleMs: number;
  };
  /** Upstream credential, added to every request (the client's Authorization is never forwarded). */
  credential?: { header: string; prefix: string; secret: SecretRef };
  /** Client request headers passed through to this upstream (lower-case). Default: user-agent. */
  forwardHeaders: string[];
  tls?: { ca?: SecretRef; servername?: string; rejectUnauthorized: boolean };
  /** How many times to retry a stream the upstream refused (REFUSED_STREAM / GOAWAY). Default 3. */
  maxRetries: number;
}

export interface ModelConfig {
  upstream: string;
  /** Model name sent upstream. Default: the logical name. */
  upstreamModel?: string;
  /** Other names clients may use for this model. */
  aliases: string[];
}

export interface HealthConfig {
  /** Success-rate objective; `/_ping` fails below it (the instance votes itself out of DNS). Default 0.99. */
  slo: number;
  /** Back in service only once the rate is at least this (hysteresis). Default: halfway from slo to 1. */
  recoverAt?: number;
  /** Sliding window (s). Default 30. */
  windowSeconds: number;
  /** Fewer requests than this in the window never fail the check. Default 20. */
  minRequests: number;
}

export interface ModelServerConfig {
  /** Start the bundled local model server as a child process (for development). */
  enabled: boolean;
  host: string;
  port: number;
  ttftMs: number;
  tokenMs: number;
  tokens: number;
}

export interface GatewayConfig {
  listen: ListenConfig;
  admin: {
    host: string; port: number; enabled: boolean;
    /** Bearer secret for POST /-/token and POST /-/reload (constant-time compare). */
    credential?: SecretRef;
    /** Opt-out: a non-loopback admin plane without a credential is otherwise a config error. */
    insecureAllowNoCredential: boolean;
  };
  http2: Http2Settings;
  limits: LimitsConfig;
  /** Request headers (lower-case) that `when` conditions may read as `request.headers.<name>`. */
  facts: { headers: string[] };
  /** Where the client's editor and extension versions come from (header `name/version`). */
  client: { editorHeader: string; pluginHeader: string };
  upstreams: Record<string, UpstreamConfig>;
  models: Record<string, ModelConfig>;
  /** Logical model used when a request names none. */
  defaultModel?: string;
  /** Policy files (globs, relative to this file), run in this order. */
  policies: string[];
  modelServer: ModelServerConfig;
  health: HealthConfig;
  reload: { watch: boolean; debounceMs: number };
  /** SIGTERM: fail health for `drainDelayMs` (LBs notice), then drain in-flight for up to `graceMs`. */
  shutdown: { drainDelayMs: number; graceMs: number };
  logging: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
  /** Token exchange and verification (see core/auth). Absent: no `auth` step may be used. */
  auth?: JsonObject;
  /** The Copilot-compatible front door (core/copilot, docs/copilot.md). Default disabled. */
  copilot: CopilotConfig;
}

export interface StepConfig {
  use: string;
  /** Shown by `explain`; default `use`. */
  name?: string;
  when?: unknown;
  params: JsonObject;
}

export interface PolicyConfig {
  name: string;
  description?: string;
  enabled: boolean;
  match: { paths?: string[]; models?: string[] };
  steps: StepConfig[];
}
