/**
 * The one route table of the completion path. Fastify registers `ROUTES` (with `:model` as a
 * path parameter); the HTTP/2 fast lane and the session guards match a raw `:path` with
 * `matchRoute`; the runtime builds one pipeline per route. A route is added here and nowhere else.
 */

/** Completion routes (registered once; never change at runtime). */
export const ROUTES = ['/v1/completions', '/v1/chat/completions', '/v1/engines/:model/completions'] as const;
export type RoutePath = typeof ROUTES[number];

/** A matched completion route, and the model named in its URL (`/v1/engines/:model/completions`). */
export interface RouteMatch { readonly route: RoutePath; readonly model: string | undefined }

const COMPLETIONS: RouteMatch = Object.freeze({ route: '/v1/completions', model: undefined });
const CHAT: RouteMatch = Object.freeze({ route: '/v1/chat/completions', model: undefined });
/** The model segment the fast lane accepts; any other (percent-encoded, long) goes to Fastify's router. */
const ENGINE = /^\/v1\/engines\/([A-Za-z0-9._:-]{1,128})\/completions$/;

/**
 * Which completion route a request path is (an exact path: no query string, no trailing slash;
 * those are left to Fastify's router, which knows them). Allocates only for the engines route.
 */
export function matchRoute(path: string): RouteMatch | undefined {
  if (path === '/v1/completions') return COMPLETIONS;
  if (path === '/v1/chat/completions') return CHAT;
  if (path.charCodeAt(4) === 101 /* e */) {
    const m = ENGINE.exec(path);
    if (m) return { route: '/v1/engines/:model/completions', model: m[1] };
  }
  return undefined;
}

/** The path a route is forwarded to upstream (engines completions are plain completions there). */
export function upstreamPath(route: RoutePath): string {
  return route === '/v1/chat/completions' ? '/v1/chat/completions' : '/v1/completions';
}
