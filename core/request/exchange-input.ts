/**
 * Exchange creation: from what every adapter knows about a request (route, parsed body, headers,
 * address, protocol) to the Exchange the pipeline runs on. `explain` builds its dry run's
 * Exchange here too.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { GatewayError } from '../errors.ts';
import { GatewayExchange } from '../exchange.ts';
import type { Runtime } from '../runtime.ts';
import { clientFacts } from '../server/client-facts.ts';
import type { JsonObject } from '../types.ts';
import type { RoutePath } from './routes.ts';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export interface ExchangeInput {
  path: RoutePath;
  body: unknown;
  headers: IncomingHttpHeaders;
  ip: string;
  protocol: 'h2' | 'h1';
  /** The model from the URL (`/v1/engines/:model/completions`). */
  pathModel?: string | undefined;
}

/**
 * Build the Exchange for a request. Returns a GatewayError for a body the gateway cannot route,
 * and the model name the client asked for (it picks the pipeline).
 */
export function createExchange(rt: Runtime, input: ExchangeInput): { ex: GatewayExchange; asked: string } | GatewayError {
  const body = input.body as JsonObject;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return new GatewayError('GW_ERR_REQ_INVALID_BODY', ['the body must be a JSON object']);
  }
  let asked: unknown = input.pathModel ?? body.model;
  if (asked === undefined || asked === null) asked = rt.config.defaultModel;
  if (typeof asked !== 'string' || asked === '') {
    return asked === undefined ? new GatewayError('GW_ERR_ROUTE_NO_MODEL') : new GatewayError('GW_ERR_REQ_INVALID_BODY', ['"model" must be a string']);
  }
  const known = rt.models.get(asked);
  const headers = input.headers;
  const rid = headers['x-request-id'];
  const ex = new GatewayExchange({
    id: typeof rid === 'string' && REQUEST_ID.test(rid) ? rid : randomUUID(),
    method: 'POST',
    path: input.path,
    protocol: input.protocol,
    ip: input.ip,
    headers: pickHeaders(headers, rt.config.facts.headers),
    client: clientFacts(headers, rt.config.client),
    body,
    route: { model: known ? known.model : asked, upstream: known ? known.upstream : '', upstreamModel: known ? known.upstreamModel : asked, arms: {} },
    authorization: typeof headers.authorization === 'string' ? headers.authorization : undefined,
  });
  // The Copilot client wants this on every reply of its GitHub-API host (core/copilot).
  if (rt.copilot !== undefined) ex.responseHeaders['x-github-request-id'] = ex.id;
  return { ex, asked };
}

function pickHeaders(h: IncomingHttpHeaders, names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) {
    const v = h[n];
    if (typeof v === 'string') out[n] = v;
  }
  return out;
}
