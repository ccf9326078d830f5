/**
 * Bytes of request bodies being received (read and kept, not complete yet), per client IP and
 * in total: what many unfinished bodies may hold in memory. Without it, one HTTP/2 connection
 * with 250 streams each sending just under `limits.bodyBytes` and never ending held 250 MB of the
 * gateway's memory until `limits.bodyTimeoutMs` (two connections: +500 MB RSS, measured from
 * outside against a gateway process), and one address may open 256 connections.
 *
 * `limits.bodyBufferBytesPerClientIp` caps one address (the TCP peer), `limits.bodyBufferBytes`
 * the process. A body that would go over a cap is refused at that chunk: `429
 * GW_ERR_REQ_TOO_MANY_IN_FLIGHT` (the address's cap) or `503 GW_ERR_SERVER_OVERLOADED` (the
 * process's), both with `Retry-After: 1`, and what it held is released. A cap below
 * `limits.bodyBytes` counts as `limits.bodyBytes`, so one body alone always passes. Cost per
 * chunk: one Map get and set.
 */
import { GatewayError } from '../errors.ts';

/** The caps (the config's `limits` fits). */
export interface BodyCaps {
  /** The largest body: a cap below it counts as it. */
  readonly bodyBytes: number;
  /** Bytes of unfinished bodies in the whole process; 0 = no cap. */
  readonly bodyBufferBytes: number;
  /** Bytes of unfinished bodies from one client address; 0 = no cap. */
  readonly bodyBufferBytesPerClientIp: number;
}

export class BodyBudget {
  #total = 0;
  readonly #byIp = new Map<string, number>();

  /** Take `n` bytes for `ip`; an error to answer if a cap would be passed (nothing is taken then). */
  take(ip: string, n: number, caps: BodyCaps): GatewayError | undefined {
    const mine = this.#byIp.get(ip) ?? 0;
    const perIp = caps.bodyBufferBytesPerClientIp;
    if (perIp > 0 && mine + n > Math.max(perIp, caps.bodyBytes)) {
      return new GatewayError('GW_ERR_REQ_TOO_MANY_IN_FLIGHT', [`from this client address (request bodies being received: over ${perIp} bytes)`], { headers: { 'retry-after': '1' } });
    }
    const total = caps.bodyBufferBytes;
    if (total > 0 && this.#total + n > Math.max(total, caps.bodyBytes)) {
      return new GatewayError('GW_ERR_SERVER_OVERLOADED', [], { headers: { 'retry-after': '1' } });
    }
    this.#byIp.set(ip, mine + n);
    this.#total += n;
    return undefined;
  }

  /** Give back `n` bytes `ip` held. */
  release(ip: string, n: number): void {
    if (n === 0) return;
    this.#total -= n;
    const left = (this.#byIp.get(ip) ?? n) - n;
    if (left <= 0) this.#byIp.delete(ip); else this.#byIp.set(ip, left);
  }
}
