/**
 * The `passthrough:` table, compiled with each runtime: path → the upstream's address and the
 * credential that replaces the client's. Read per request by core/server/passthrough.ts, so a
 * reload that changes an upstream's host or key applies to the next request.
 */
import type { GatewayConfig } from '../config/model.ts';
import type { SecretRef } from '../config/model.ts';

export interface PassthroughTarget {
  readonly path: string;
  readonly upstream: string;
  /** `http://host:port` or `https://host:port` of the upstream. */
  readonly origin: string;
  /** The upstream URL's path (`''` or e.g. `/openai`), put before the request path. */
  readonly basePath: string;
  readonly methods: ReadonlySet<string>;
  readonly auth: boolean;
  /** The upstream's credential header, or undefined when it has none. */
  readonly credential: { readonly header: string; readonly value: string } | undefined;
  /** The upstream's `tls.ca` (PEM), when it has one. */
  readonly ca: string | undefined;
  /** Client headers passed upstream (the upstream's `forwardHeaders`), besides the body's. */
  readonly forwardHeaders: readonly string[];
}

/** Build the table. The config was checked at load (known upstreams, paths of their own). */
export function compilePassthrough(c: GatewayConfig, readSecret: (ref: SecretRef) => string): ReadonlyMap<string, PassthroughTarget> {
  const out = new Map<string, PassthroughTarget>();
  for (const p of c.passthrough) {
    const u = c.upstreams[p.upstream]!;
    const url = new URL(u.url);
    out.set(p.path, Object.freeze({
      path: p.path,
      upstream: p.upstream,
      origin: url.origin,
      basePath: url.pathname.replace(/\/$/, ''),
      methods: new Set<string>(p.methods),
      auth: p.auth,
      credential: u.credential ? { header: u.credential.header, value: u.credential.prefix + readSecret(u.credential.secret) } : undefined,
      ca: u.tls?.ca ? readSecret(u.tls.ca) : undefined,
      forwardHeaders: u.forwardHeaders,
    }));
  }
  return out;
}
