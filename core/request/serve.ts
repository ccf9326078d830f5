/**
 * The one entry of the completion path. Each adapter reduces its request to a `CompletionRequest`
 * in a few lines (the Fastify route in server/data-plane.ts, the raw HTTP/2 stream in
 * server/fast-lane.ts) and calls `serveCompletion`; everything after is the same code.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { GatewayError } from '../errors.ts';
import { markOwned } from '../server/client-sessions.ts';
import { Call } from './call.ts';
import { writeError } from './error-reply.ts';
import { createExchange } from './exchange-input.ts';
import type { ClientResponse } from './response.ts';
import type { RoutePath } from './routes.ts';
import type { GatewayState } from './state.ts';

/** One completion request, as every adapter hands it over. */
export interface CompletionRequest {
  readonly route: RoutePath;
  /** The model named in the URL (`/v1/engines/:model/completions`). */
  readonly pathModel: string | undefined;
  readonly headers: IncomingHttpHeaders;
  /** The client's address. */
  readonly ip: string;
  readonly protocol: 'h2' | 'h1';
  /** The body's bytes (forwarded as they are when no step changes the body) and their parse. */
  readonly raw: Buffer | undefined;
  readonly body: unknown;
  /** Where the response goes. */
  readonly res: ClientResponse;
}

/** Serve a completion request: shutdown check, Exchange, then the Call (pipeline → attempt → relay). */
export function serveCompletion(gw: GatewayState, q: CompletionRequest): void {
  try {
    // An HTTP/2 stream reset while its body was read, already counted by its session's guard.
    if (!markOwned(q.res.stream)) return;
    if (gw.closing) return writeError(q.res, new GatewayError('GW_ERR_SERVER_SHUTTING_DOWN'), gw, q.headers);
    const rt = gw.runtime;
    const made = createExchange(rt, { path: q.route, body: q.body, headers: q.headers, ip: q.ip, protocol: q.protocol, pathModel: q.pathModel });
    if (made instanceof GatewayError) return writeError(q.res, made, gw, q.headers);
    new Call(gw, rt, rt.pipeline(q.route, made.asked), made.ex, q.res, q.raw, q.route, made.asked).start();
  } catch (e) {
    // The Call catches its own errors; this is for anything before it exists. Never crash the process.
    gw.log.error({ err: e instanceof Error ? e.message : String(e) }, 'unexpected error before the request started');
    try { writeError(q.res, e instanceof GatewayError ? e : new GatewayError('GW_ERR_SERVER_INTERNAL'), gw, q.headers); } catch { /* the response had started */ }
  }
}
