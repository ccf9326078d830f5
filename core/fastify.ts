/**
 * ghostgate as a Fastify plugin, for an application that already has its Fastify server:
 *
 *   import Fastify from 'fastify';
 *   import ghostgate from 'ghostgate/fastify';
 *
 *   const app = Fastify();
 *   app.get('/health', async () => ({ ok: true }));          // the application's own routes
 *   await app.register(ghostgate, { configFile: 'gateway.config.yaml' });
 *   await app.listen({ port: 8080 });                        // POST /v1/completions is ghostgate's
 *   ...
 *   await app.close();                                       // requests in flight finish, pools close
 *
 * Wrapped with fastify-plugin so `app.ghostgate` (the Gateway: `reload()`, `metrics`, `runtime`)
 * is visible to the application; ghostgate's own routes, parser and error handler stay in an
 * encapsulated child (Gateway.embed). On close, requests in flight get `shutdown.graceMs` to
 * finish (in `preClose`, while the server still runs), then the upstream pools close.
 * docs/embedding.md says what embedded mode serves and what only `ghostgate start` gives.
 */
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { Gateway } from './gateway.ts';
import type { GatewayOptions } from './gateway.ts';

export type GhostgateFastifyOptions = Pick<GatewayOptions, 'configFile' | 'env' | 'plugins' | 'watch'>;

declare module 'fastify' {
  interface FastifyInstance {
    /** The embedded gateway (registered by `ghostgate/fastify`). */
    ghostgate: Gateway;
  }
}

async function ghostgate(app: FastifyInstance, opts: GhostgateFastifyOptions): Promise<void> {
  const gw = await Gateway.embed(app, { configFile: opts.configFile, env: opts.env, plugins: opts.plugins, watch: opts.watch });
  app.decorate('ghostgate', gw);
  app.addHook('preClose', async () => { await gw.close(); });
}

/**
 * Node's runtime patches `ghostgate start` applies to its own processes (core/runtime-patches.ts):
 * embedded, the process is the application's, so they apply only if it calls this.
 */
export { applyRuntimePatches } from './runtime-patches.ts';

export default fp<GhostgateFastifyOptions>(ghostgate, { name: 'ghostgate', fastify: '5.x' });
