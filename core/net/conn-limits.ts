/**
 * Connection caps for the data-plane listeners: a total across every data-plane port and one
 * per client IP. Checked on the raw TCP 'connection' event, before the TLS handshake, the
 * protocol sniffer or any HTTP/2 session exists: a refused connection costs one accept and one
 * close. The admin plane is a separate listener and is not counted, and the total stays below
 * the process's open-file limit (see `connectionBudget`), so a full data plane cannot take the
 * descriptors the admin plane, the upstream pools and the log need.
 */
import { readFileSync } from 'node:fs';
import type { Server, Socket } from 'node:net';

export type RefuseReason = 'max_connections' | 'max_per_ip';

export class ConnectionGate {
  readonly max: number;
  readonly perIp: number;
  #open = 0;
  readonly #byIp = new Map<string, number>();
  /** Admitted sockets still open: the last resort of shutdown (see `destroyAll`). */
  readonly #sockets = new Set<Socket>();
  readonly #onRefuse: (reason: RefuseReason, ip: string) => void;
  readonly #onCount: (open: number) => void;

  /** `perIp` 0 = no per-IP cap. `onCount` hears the number of open connections on each change. */
  constructor(max: number, perIp: number, onRefuse: (reason: RefuseReason, ip: string) => void, onCount: (open: number) => void = noop) {
    this.max = max;
    this.perIp = perIp;
    this.#onRefuse = onRefuse;
    this.#onCount = onCount;
  }

  /** Connections admitted and still open, on every guarded server. */
  get open(): number { return this.#open; }

  /** Put the caps in front of `server`'s connection handlers (call after they are installed). */
  guard(server: Server): void {
    const original = server.listeners('connection') as Array<(s: Socket) => void>;
    server.removeAllListeners('connection');
    server.on('connection', (socket: Socket) => {
      if (!this.admit(socket)) return;
      for (const fn of original) fn.call(server, socket);
    });
  }

  /**
   * Destroy every admitted socket still open, whatever runs on it; returns how many. Shutdown's
   * last step: an HTTP/2 session whose client stopped reading keeps its TCP socket open after
   * `session.destroy()`, and the listener's close would wait for it forever.
   */
  destroyAll(): number {
    const n = this.#sockets.size;
    for (const s of this.#sockets) s.destroy();
    return n;
  }

  /** Count `socket` in, or close it and return false when a cap is reached. */
  admit(socket: Socket): boolean {
    const ip = socket.remoteAddress ?? '';
    const n = this.#byIp.get(ip) ?? 0;
    const reason: RefuseReason | undefined = this.#open >= this.max ? 'max_connections' : this.perIp > 0 && n >= this.perIp ? 'max_per_ip' : undefined;
    if (reason !== undefined) {
      socket.on('error', noop);
      socket.destroy();
      this.#onRefuse(reason, ip);
      return false;
    }
    this.#onCount(++this.#open);
    this.#byIp.set(ip, n + 1);
    this.#sockets.add(socket);
    socket.once('close', () => {
      this.#sockets.delete(socket);
      this.#onCount(--this.#open);
      const left = this.#byIp.get(ip)! - 1;
      if (left === 0) this.#byIp.delete(ip); else this.#byIp.set(ip, left);
    });
    return true;
  }
}

function noop(): void { /* a refused socket's errors are of no interest */ }

/** The process's soft limit on open files (RLIMIT_NOFILE), where the OS tells us (Linux). */
export function openFileLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m && m[1] !== 'unlimited' ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Descriptors kept back from client connections: admin plane, upstream pools, files, log. */
export function fdReserve(fdLimit: number): number { return Math.max(64, Math.ceil(fdLimit * 0.2)); }

/**
 * The total connection cap to use. `configured` 0 = automatic: the open-file limit less the
 * reserve (10,000 where the limit is unknown). An explicit value above that budget is lowered to
 * it (`clamped` says so, for a warning at start).
 */
export function connectionBudget(configured: number, fdLimit = openFileLimit()): { max: number; clamped: boolean; fdLimit?: number } {
  const budget = fdLimit === undefined ? undefined : Math.max(1, fdLimit - fdReserve(fdLimit));
  if (configured === 0) return { max: budget ?? 10_000, clamped: false, fdLimit };
  if (budget !== undefined && configured > budget) return { max: budget, clamped: true, fdLimit };
  return { max: configured, clamped: false, fdLimit };
}
