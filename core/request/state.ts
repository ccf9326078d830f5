/** What the request path needs from the gateway (the Gateway class implements it; tests may fake it). */
import type { HealthMonitor } from '../health.ts';
import type { GatewayMetrics } from '../metrics.ts';
import type { Runtime } from '../runtime.ts';
import type { BodyBudget } from '../server/body-budget.ts';
import type { ClientInflight } from '../server/client-sessions.ts';
import type { Logger } from '../types.ts';

export interface GatewayState {
  readonly runtime: Runtime;
  readonly metrics: GatewayMetrics;
  readonly health: HealthMonitor;
  readonly log: Logger;
  readonly closing: boolean;
  /** Requests in flight upstream per client IP (`limits.maxInflightPerClientIp`). */
  readonly clientInflight: ClientInflight;
  /** Bytes of request bodies being received, per client IP and in total (`limits.bodyBufferBytes*`). */
  readonly bodyBudget: BodyBudget;
  /**
   * Completion requests taken by each adapter (the HTTP/2 fast lane, Fastify's route): two
   * increments' worth of bookkeeping, so tests and operators can see which path served what.
   */
  readonly lanes: { fast: number; fastify: number };
}
