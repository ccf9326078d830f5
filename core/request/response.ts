/**
 * The one response shape the request path writes to. `http.ServerResponse` and
 * `Http2ServerResponse` (the Fastify route's `reply.raw`) satisfy it as they are; the HTTP/2 fast
 * lane implements it over a raw stream (`server/fast-lane.ts`).
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { ServerHttp2Stream } from 'node:http2';

/** The part of http.ServerResponse / Http2ServerResponse we use (their overloads don't unify). */
export interface ClientResponse {
  writeHead(status: number, headers: OutgoingHttpHeaders): unknown;
  write(chunk: Buffer | string, cb?: () => void): boolean;
  end(chunk?: string): unknown;
  on(event: 'close', fn: () => void): unknown;
  once(event: 'drain', fn: () => void): unknown;
  destroy(): unknown;
  /** The connection (http.ServerResponse; on HTTP/1.1 relay.ts corks it to batch a loop iteration's writes). */
  readonly socket?: { cork(): void; uncork(): void } | null;
  readonly writableEnded: boolean;
  readonly destroyed: boolean;
  /** Bytes written and not yet taken by the client (the stall check watches it shrink). */
  readonly writableLength: number;
  /** Present on HTTP/2 responses. */
  readonly stream?: ServerHttp2Stream;
  /** The request; on HTTP/1.1 its connection is watched by the last look. */
  readonly req?: { headers: IncomingHttpHeaders; readonly socket?: { readonly destroyed: boolean; readonly readableEnded: boolean; readonly remoteAddress?: string } | null };
}

/**
 * End the client's response abnormally: RST_STREAM on HTTP/2, the socket closed mid-body on
 * HTTP/1.1. destroy(err), not close(code): close() on a server stream first sends END_STREAM when
 * it can, which the client takes as a clean end; destroy(err) sends only the RST.
 */
export function resetClient(res: ClientResponse, why: string): void {
  if (res.stream !== undefined) { res.stream.on('error', noop); res.stream.destroy(new Error(why)); }
  else res.destroy();
}

/** Whether the client's stream or connection is already gone (read from state, not events). */
export function clientGone(res: ClientResponse): boolean {
  if (res.destroyed) return true;
  const st = res.stream;
  if (st !== undefined) return st.destroyed || st.closed;
  // The request's socket: a pipelined HTTP/1.1 response has none of its own until the ones
  // before it are done.
  const sock = res.req?.socket;
  return sock != null && (sock.destroyed || sock.readableEnded);
}

function noop(): void { /* the error is ours, already reported to the client */ }
