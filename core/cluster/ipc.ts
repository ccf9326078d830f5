/**
 * The primary ↔ worker channel (Node's cluster IPC): requests with ids and their answers, plus a
 * few one-way events. JSON messages; nothing here is on the request path. The largest is a config
 * snapshot (the text of the config and policy files, sent at start and with each reload). Node's
 * IPC channel checks no message size: a message is one JSON line on a pipe, buffered until its
 * newline and parsed whole (Node's lib/internal/child_process/serialization.js, `json`, the
 * cluster default); test/cluster/config-snapshot.test.ts sends one with a 256 KiB policy file.
 *
 *   const rpc = new Rpc(1, (m, sent) => worker.send(m, sent));
 *   worker.on('message', (m) => rpc.receive(m));
 *   const v = await rpc.call('health', undefined, 5000);
 */
import type { ConfigSnapshot } from '../config/load.ts';
import { GatewayError } from '../errors.ts';
import type { ReloadResult } from '../gateway.ts';
import type { HealthStatus } from '../health.ts';

/** What the primary asks a worker; `args` and the answer of each. */
export interface WorkerOps {
  /** Run one admin-plane request on the worker's admin app (Fastify `inject`, no listener). */
  inject: { args: InjectRequest; result: InjectResponse };
  /** Load this config (the primary validated it first) and swap it in. */
  reload: { args: { trigger: string; config: ValidatedConfig }; result: ReloadResult };
  /** prom-client `getMetricsAsJSON()` of the worker's registry. */
  metrics: { args: undefined; result: unknown[] };
  /** The worker's own health verdict and running config version. */
  health: { args: undefined; result: WorkerHealth };
  /** Version, fingerprint and last reload of the running config. */
  info: { args: undefined; result: WorkerInfo };
}

export type OpName = keyof WorkerOps;

export interface InjectRequest { method: string; url: string; headers: Record<string, string | string[] | undefined>; payload?: string }
export interface InjectResponse { statusCode: number; headers: Record<string, string | string[] | number | undefined>; body: string }

export interface WorkerHealth extends HealthStatus { configVersion: number }

export interface WorkerInfo { version: number; fingerprint: string; loadedAt: string; lastReload: ReloadResult | undefined }

/**
 * A config the primary read and validated: the texts of its files, and its version (numbered by
 * the primary, so the same config has the same version on every worker, replacements included).
 */
export interface ValidatedConfig { version: number; snapshot: ConfigSnapshot }

/** Sent by the primary once the worker is online: what every worker must share. */
export interface InitMessage {
  t: 'init';
  /** The worker's slot, 1..N (a replacement takes the slot of the worker it replaces). */
  slot: number;
  /** N: how many workers share the data plane (each takes its share of deployment caps). */
  workers: number;
  configFile: string;
  /** The running config (the last one the primary validated and a worker took): a new worker loads it, not the disk. */
  config: ValidatedConfig;
  /** Data-plane ports to bind (with SO_REUSEPORT): those the first worker got. */
  listen?: { port: number; tlsPort?: number };
  /** The dev-mode signing key (PKCS#8 PEM) and API key, the same for every worker. */
  dev: { kid: string; pem: string; apiKey: string };
}

/** Worker → primary, once: listening (with the addresses) or not (with the error). */
export type StartedMessage =
  | { t: 'ready'; addresses: { cleartext: string; tls?: string; port: number; tlsPort?: number }; banner: BannerInfo }
  | { t: 'failed'; code: string; message: string; exitCode: number };

/** What the primary's start-up banner needs from a worker's runtime. */
export interface BannerInfo { version: number; model0: string; upstreams: string; devToken?: string; devApiKey?: string }

interface CallMessage { t: 'call'; id: number; op: OpName; args: unknown }
interface ReplyMessage { t: 'reply'; id: number; ok: boolean; value?: unknown; error?: string }

export type ClusterMessage = InitMessage | StartedMessage | CallMessage | ReplyMessage;

export function isClusterMessage(m: unknown): m is ClusterMessage {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string';
}

/**
 * The calling side (primary): one per worker. Every failure to get an answer (not sent, no answer
 * in time, the worker gone) rejects with `GW_ERR_CLUSTER_WORKER` naming the worker; an answer
 * that is an error rejects with the worker's message.
 */
export class Rpc {
  #next = 1;
  readonly #pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  readonly #slot: number;
  readonly #send: (m: ClusterMessage, sent: (err: Error | null) => void) => void;
  /**
   * `send` must report a failed send to `sent` (Node's `worker.send(m, callback)`): a message to
   * a worker whose channel has closed then fails this call at once, instead of an 'error' event
   * on the worker and a call that waits for its timeout.
   */
  constructor(slot: number, send: (m: ClusterMessage, sent: (err: Error | null) => void) => void) { this.#slot = slot; this.#send = send; }

  /** Ask the worker; rejects after `timeoutMs`, when the message cannot be sent, or when the worker goes away. */
  call<K extends OpName>(op: K, args: WorkerOps[K]['args'], timeoutMs: number): Promise<WorkerOps[K]['result']> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.#fail(id, `no answer to "${op}" within ${timeoutMs} ms`), timeoutMs);
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      const sent = (e: Error | null): void => { if (e) this.#fail(id, `"${op}" not sent: ${(e as { code?: string }).code ?? e.message}`); };
      try { this.#send({ t: 'call', id, op, args }, sent); } catch (e) { sent(e instanceof Error ? e : new Error(String(e))); }
    });
  }

  #fail(id: number, why: string): void {
    const p = this.#pending.get(id);
    if (!p) return;
    this.#pending.delete(id);
    clearTimeout(p.timer);
    p.reject(new GatewayError('GW_ERR_CLUSTER_WORKER', [this.#slot, why]));
  }

  /** Feed a message from the worker; returns false if it was not an answer. */
  receive(m: ClusterMessage): boolean {
    if (m.t !== 'reply') return false;
    const p = this.#pending.get(m.id);
    if (!p) return true;
    this.#pending.delete(m.id);
    clearTimeout(p.timer);
    if (m.ok) p.resolve(m.value); else p.reject(new Error(m.error ?? 'worker error'));
    return true;
  }

  /** The worker is gone (or can no longer be reached): fail every call still waiting. */
  close(why: string): void {
    for (const id of [...this.#pending.keys()]) this.#fail(id, why);
  }
}

/** The answering side (worker): serve the primary's calls with `handlers`. */
export function serveCalls(handlers: { [K in OpName]: (args: WorkerOps[K]['args']) => Promise<WorkerOps[K]['result']> }, send: (m: ClusterMessage) => void): (m: unknown) => void {
  return (m: unknown) => {
    if (!isClusterMessage(m) || m.t !== 'call') return;
    const h = handlers[m.op] as ((a: unknown) => Promise<unknown>) | undefined;
    const reply = (r: ReplyMessage): void => { try { send(r); } catch { /* primary gone */ } };
    if (!h) { reply({ t: 'reply', id: m.id, ok: false, error: `unknown op ${m.op}` }); return; }
    h(m.args).then(
      (value) => reply({ t: 'reply', id: m.id, ok: true, value }),
      (e: unknown) => reply({ t: 'reply', id: m.id, ok: false, error: e instanceof Error ? e.message : String(e) }),
    );
  };
}
