/**
 * Opens the shared store the config asks for: none (state in process, the default) or Redis
 * (`store.redis`). The gateway opens it once at start and keeps it for its life (a change of
 * `store` needs a restart); each worker process opens its own connections. The Redis client is
 * loaded only when `store.redis` is set: a gateway without it never loads ioredis.
 */
import type { Registry } from 'prom-client';
import { GatewayError } from '../errors.ts';
import type { SecretRef } from '../config/model.ts';
import type { Logger } from '../types.ts';
import type { SharedStore } from './types.ts';

export type { SharedStore } from './types.ts';
export { STORE_KEY } from './types.ts';

export interface StoreConfig {
  redis?: {
    /** `redis://…` from `${REDIS_URL}`, or a secret ref ({env} / {file}). May carry a password. */
    url: string | SecretRef;
    timeoutMs: number;
    retryMs: number;
    keyPrefix: string;
  };
}

/** Longest start-up waits for a configured Redis (it starts anyway, in process, if Redis is away). */
export const STORE_START_WAIT_MS = 2000;

export interface OpenStore { store: SharedStore | undefined; close(): Promise<void> }

/**
 * Open the configured store. `readSecret` resolves a secret ref. Throws GW_ERR_CONFIG_INVALID
 * (naming the key, never the value) when the URL is not a redis:// or rediss:// URL.
 */
export async function openStore(cfg: StoreConfig | undefined, readSecret: (ref: SecretRef) => string, log: Logger, registry: Registry): Promise<OpenStore> {
  const r = cfg?.redis;
  if (r === undefined) return { store: undefined, close: async () => {} };
  const url = typeof r.url === 'string' ? r.url : readSecret(r.url);
  let ok = false;
  try { ok = /^rediss?:$/.test(new URL(url).protocol); } catch { ok = false; }
  if (!ok) throw new GatewayError('GW_ERR_CONFIG_INVALID', ['store.redis.url is not a redis:// or rediss:// URL (its value is not shown: it may hold a password)']);
  const { RedisStore } = await import('./redis.ts');
  const store = new RedisStore({ url, timeoutMs: r.timeoutMs, retryMs: r.retryMs, keyPrefix: r.keyPrefix }, log, registry);
  await store.whenUp(STORE_START_WAIT_MS);
  return { store, close: () => store.close() };
}
