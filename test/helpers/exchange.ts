/** Build a real GatewayExchange for step-level tests (no server needed). */
import { GatewayExchange } from '../../core/exchange.ts';
import type { Facts, JsonObject, Route } from '../../core/types.ts';

export interface TestExchangeInit {
  body?: JsonObject;
  headers?: Record<string, string>;
  path?: string;
  client?: Partial<Facts['client']>;
  claims?: Record<string, unknown>;
  route?: Partial<Route>;
  id?: string;
  authorization?: string;
}

export function makeExchange(init: TestExchangeInit = {}): GatewayExchange {
  const body = init.body ?? { model: 'ghost-small', prompt: 'def fib(', stream: true };
  const ex = new GatewayExchange({
    id: init.id ?? 'test-1',
    method: 'POST',
    path: init.path ?? '/v1/completions',
    protocol: 'h2',
    ip: '127.0.0.1',
    headers: init.headers ?? {},
    client: { editor: undefined, editorVersion: undefined, plugin: undefined, version: undefined, ...init.client },
    body,
    authorization: init.authorization,
    route: { model: String(body.model ?? 'ghost-small'), upstream: 'local', upstreamModel: String(body.model ?? 'ghost-small'), arms: {}, ...init.route },
  });
  if (init.claims) ex.setClaims(init.claims);
  return ex;
}
