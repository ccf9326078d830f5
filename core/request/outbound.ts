/** The request as it goes upstream, built per attempt from the Exchange. */
import type { IncomingHttpHeaders } from 'node:http';
import { GatewayError } from '../errors.ts';
import type { GatewayExchange } from '../exchange.ts';
import type { OutboundRequest } from '../types.ts';
import type { RoutePath } from './routes.ts';
import { upstreamPath } from './routes.ts';

/**
 * The upstream model name set, the client's bytes reused when no step changed the body, headers
 * from the allow-list plus steps' (never the client's Authorization; the upstream client adds the
 * upstream's own credential).
 */
export function outboundRequest(
  ex: GatewayExchange, upstream: string, forward: readonly string[], path: RoutePath,
  incoming: IncomingHttpHeaders | undefined, rawBody: Buffer | undefined,
): OutboundRequest {
  if (ex.body.model !== ex.route.upstreamModel) ex.setBody('/model', ex.route.upstreamModel);
  let body: Buffer;
  try {
    body = ex.bodyChanged || rawBody === undefined ? Buffer.from(JSON.stringify(ex.body)) : rawBody;
  } catch {
    // JSON.parse accepts nesting that JSON.stringify cannot re-serialise (stack depth).
    throw new GatewayError('GW_ERR_REQ_INVALID_BODY', ['the body is nested too deeply']);
  }
  const headers: Record<string, string> = { 'content-type': 'application/json', 'x-request-id': ex.id };
  const accept = incoming?.accept;
  headers.accept = typeof accept === 'string' ? accept : 'application/json, text/event-stream';
  if (incoming) {
    for (const n of forward) {
      const v = incoming[n];
      if (typeof v === 'string' && n !== 'authorization') headers[n] = v;
    }
  }
  const extra = ex.upstreamHeaders;
  for (const k in extra) if (k !== 'authorization') headers[k] = extra[k]!;
  return { upstream, path: upstreamPath(path), headers, body };
}
