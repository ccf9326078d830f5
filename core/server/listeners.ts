/**
 * Fastify instances for the data plane: cleartext (h2c prior knowledge + HTTP/1.1 on one port)
 * and, optionally, TLS (h2 via ALPN, falling back to HTTP/1.1). Both run the same routes.
 *
 * Connection handling lives at the listener level (core/net), not in the request handlers:
 * caps on accept, HTTP/1.1 fronts with head/body deadlines, HTTP/2 stream and session deadlines.
 */
import http2 from 'node:http2';
import type { Http2SecureServer, Http2Server, Http2Session, ServerOptions } from 'node:http2';
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { GatewayConfig } from '../config/model.ts';
import { ConnectionGate, connectionBudget } from '../net/conn-limits.ts';
import { routeHttp1, routeHttp1OverTls } from '../net/dual-protocol.ts';
import { watchH2Sessions } from '../net/h2-sessions.ts';
import { Http1Front } from '../net/http1.ts';
import { logServerErrors } from '../net/server-errors.ts';
import type { RequestHandler } from '../net/http1.ts';
import { clientErrorReply, frameworkErrorReply } from './client-error.ts';
import { MAX_HEADER_PAIRS } from './stream-guard.ts';
import type { GatewayMetrics } from '../metrics.ts';

/** HTTP/2 server settings from config. */
export function h2ServerOptions(c: GatewayConfig): ServerOptions {
  return {
    // Node's http.Server sets TCP_NODELAY on accepted sockets; http2's servers (net/tls) do not.
    // Without it, HTTP/1.1 responses (head+body, then the last chunk as a separate small write)
    // meet Nagle + the client's delayed ACK: ~40 ms per request on a reused keep-alive socket.
    noDelay: true,
    settings: { maxConcurrentStreams: c.http2.maxConcurrentStreams, enablePush: false, initialWindowSize: 1 << 20, maxHeaderListSize: c.limits.headerBytes },
    maxSendHeaderBlockLength: c.limits.headerBytes * 4,
    // nghttp2's reset-flood bucket; editors cancel ~45% of requests (see config/model.ts).
    streamResetBurst: c.http2.streamResetBurst,
    streamResetRate: c.http2.streamResetRate,
    maxSessionMemory: 64,
    // Node's own cap on header fields resets the stream with no response (RST_STREAM
    // ENHANCE_YOUR_CALM). The gateway's cap, MAX_HEADER_PAIRS, is checked where the client can get
    // a coded 431 (installStreamGuards); Node's is set where the header bytes limit binds first
    // (Node counts 32 bytes and more per field against SETTINGS_MAX_HEADER_LIST_SIZE).
    maxHeaderListPairs: Math.max(MAX_HEADER_PAIRS, Math.ceil(c.limits.headerBytes / 32)) + 1,
  } as ServerOptions;
}

export interface DataPlaneServers {
  cleartext: FastifyInstance;
  tls: FastifyInstance | undefined;
  /** Live client HTTP/2 sessions (for graceful shutdown). */
  sessions: Set<Http2Session>;
  /** The HTTP/1.1 side of each port (for graceful shutdown). */
  http1: Http1Front[];
  /** Connection caps shared by both ports. */
  gate: ConnectionGate;
}

export function createDataPlaneServers(c: GatewayConfig, logger: FastifyBaseLogger, metrics: GatewayMetrics, tls?: { key: string; cert: string }): DataPlaneServers {
  const sessions = new Set<Http2Session>();
  const http1: Http1Front[] = [];
  const budget = connectionBudget(c.limits.maxConnections);
  if (budget.clamped) {
    logger.warn({ maxConnections: c.limits.maxConnections, using: budget.max, openFileLimit: budget.fdLimit }, 'limits.maxConnections is above what the open-file limit allows (ulimit -n) with a reserve for the admin plane and upstreams; using the lower value');
  }
  let refusedLogged = 0;
  const gate = new ConnectionGate(budget.max, c.limits.maxConnectionsPerIp, (reason, ip) => {
    metrics.clientConnectionsRefused.labels(reason).inc();
    // One line per 10 s at most: a flood must not become a log flood.
    const now = Date.now();
    if (now - refusedLogged > 10_000) { refusedLogged = now; logger.warn({ reason, ip, open: gate.open }, 'client connection refused (connection cap); see ghostgate_client_connections_refused_total'); }
  }, (open) => metrics.clientConnectionsOpen.set(open));
  const onTimeout = (phase: string): void => { metrics.clientTimeouts.labels(phase).inc(); };
  const front = (handler: RequestHandler): Http1Front => {
    const f = new Http1Front({
      handler, maxHeaderSize: c.limits.headerBytes, headersTimeoutMs: c.limits.headersTimeoutMs, bodyTimeoutMs: c.limits.bodyTimeoutMs,
      onConnection: () => metrics.clientSessions.labels('h1').inc(), onTimeout, onClientError: (code) => metrics.errors.labels(code).inc(),
    });
    http1.push(f);
    return f;
  };
  const common = {
    loggerInstance: logger,
    // No per-request log lines: the hot path pays for every one. Metrics carry the story.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: c.limits.bodyBytes,
    // While closing, requests still reach our handler, which answers a coded 503
    // (GW_ERR_SERVER_SHUTTING_DOWN) instead of Fastify's uncoded one.
    return503OnClosing: false,
    routerOptions: { ignoreTrailingSlash: true },
    requestIdHeader: false as const,
    // We own the HTTP/2 session lifetime (watchH2Sessions), not Fastify.
    http2SessionTimeout: 0,
    // Refused before any route (bad URL encoding; HTTP/1.1 the parser refuses): our error shape.
    frameworkErrors: frameworkErrorReply((code) => metrics.errors.labels(code).inc()) as never,
    clientErrorHandler: clientErrorReply((code) => metrics.errors.labels(code).inc()) as never,
  };
  const h2 = { bodyTimeoutMs: c.limits.bodyTimeoutMs, idleTimeoutMs: c.http2.sessionIdleTimeoutMs, onSession: () => metrics.clientSessions.labels('h2').inc(), onTimeout };
  const cleartext = Fastify({
    ...common,
    http2: true,
    serverFactory: (handler) => {
      const server = http2.createServer(h2ServerOptions(c), handler);
      routeHttp1(server, front(handler as unknown as RequestHandler), c.limits.headersTimeoutMs);
      watchH2Sessions(server, sessions, h2);
      gate.guard(server);
      logServerErrors(server, logger, 'cleartext');
      return server;
    },
  }) as unknown as FastifyInstance;
  let secure: FastifyInstance | undefined;
  if (tls) {
    secure = Fastify({
      ...common,
      http2: true,
      https: {
        ...h2ServerOptions(c), allowHTTP1: true, key: tls.key, cert: tls.cert, ALPNProtocols: ['h2', 'http/1.1'],
        // The TLS handshake is part of the time a client has to send its request head.
        handshakeTimeout: c.limits.headersTimeoutMs,
      },
    }) as unknown as FastifyInstance;
    const server = secure.server as unknown as Http2SecureServer;
    // Fastify's request handler, for the HTTP/1.1 front (Node's own fallback would bypass it).
    const handler = server.listeners('request')[0] as RequestHandler;
    routeHttp1OverTls(server, front(handler));
    watchH2Sessions(server, sessions, h2);
    gate.guard(server);
    logServerErrors(server, logger, 'tls');
  }
  return { cleartext, tls: secure, sessions, http1, gate };
}

export type { Http2Server };
