/**
 * Fastify instances for the data plane: cleartext (h2c prior knowledge + HTTP/1.1 on one port)
 * and, optionally, TLS (h2 via ALPN, falling back to HTTP/1.1). Both run the same routes.
 */
import http2 from 'node:http2';
import type { Http2Server, Http2Session, ServerOptions } from 'node:http2';
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { GatewayConfig } from '../config/model.ts';
import { acceptHttp1 } from '../net/dual-protocol.ts';
import { clientErrorReply, frameworkErrorReply } from './client-error.ts';
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
    maxHeaderListPairs: 256,
  } as ServerOptions;
}

/** Keep client sessions long-lived: close them only after a long idle time. */
function trackSessions(server: Http2Server | http2.Http2SecureServer, c: GatewayConfig, metrics: GatewayMetrics, sessions: Set<Http2Session>): void {
  server.on('session', (session: Http2Session) => {
    metrics.clientSessions.labels('h2').inc();
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
    if (c.http2.sessionIdleTimeoutMs > 0) session.setTimeout(c.http2.sessionIdleTimeoutMs, () => session.close());
  });
}

export interface DataPlaneServers {
  cleartext: FastifyInstance;
  tls: FastifyInstance | undefined;
  /** Live client HTTP/2 sessions (for graceful shutdown). */
  sessions: Set<Http2Session>;
}

export function createDataPlaneServers(c: GatewayConfig, logger: FastifyBaseLogger, metrics: GatewayMetrics, tls?: { key: string; cert: string }): DataPlaneServers {
  const sessions = new Set<Http2Session>();
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
    // We own the HTTP/2 session lifetime (trackSessions), not Fastify.
    http2SessionTimeout: 0,
    // Refused before any route (bad URL encoding; HTTP/1.1 the parser refuses): our error shape.
    frameworkErrors: frameworkErrorReply((code) => metrics.errors.labels(code).inc()) as never,
    clientErrorHandler: clientErrorReply((code) => metrics.errors.labels(code).inc()) as never,
  };
  const cleartext = Fastify({
    ...common,
    http2: true,
    serverFactory: (handler) => {
      const server = http2.createServer(h2ServerOptions(c), handler);
      acceptHttp1(server, { handler: handler as never, maxHeaderSize: c.limits.headerBytes, headersTimeoutMs: c.limits.headersTimeoutMs, onHttp1: () => metrics.clientSessions.labels('h1').inc(), onClientError: (code) => metrics.errors.labels(code).inc() });
      trackSessions(server, c, metrics, sessions);
      return server;
    },
  }) as unknown as FastifyInstance;
  let secure: FastifyInstance | undefined;
  if (tls) {
    secure = Fastify({
      ...common,
      http2: true,
      https: { ...h2ServerOptions(c), allowHTTP1: true, key: tls.key, cert: tls.cert, ALPNProtocols: ['h2', 'http/1.1'] },
    }) as unknown as FastifyInstance;
    trackSessions(secure.server as unknown as http2.Http2SecureServer, c, metrics, sessions);
  }
  return { cleartext, tls: secure, sessions };
}
