/**
 * A minimal LSP client over stdio, enough to drive GitHub's Copilot language server as an editor
 * does: Content-Length framed JSON-RPC, requests with ids, notifications, and answers to the
 * server's own requests (workspace/configuration and the like).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';

type Json = unknown;
interface Pending { resolve(v: Json): void; reject(e: Error): void; method: string }

export class LspClient {
  readonly child: ChildProcess;
  /** stderr and window/logMessage lines (for a failure report). */
  readonly log: string[] = [];
  /** Notifications received, by method. */
  readonly notes: Array<{ method: string; params: Json }> = [];
  #buf: Buffer = Buffer.alloc(0);
  #id = 0;
  #pending = new Map<number, Pending>();
  #exited: Promise<number | null>;
  #waiters: Array<{ method: string; test(p: Json): boolean; resolve(p: Json): void }> = [];

  constructor(node: string, script: string, env: NodeJS.ProcessEnv, cwd: string) {
    this.child = spawn(node, [script, '--stdio'], { env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    this.#exited = new Promise((resolve) => this.child.once('exit', (code) => {
      for (const p of this.#pending.values()) p.reject(new Error(`language server exited (${code}) during ${p.method}`));
      this.#pending.clear();
      resolve(code);
    }));
    this.child.stdout!.on('data', (d: Buffer) => this.#onData(d));
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => { this.log.push(...d.split('\n').filter(Boolean).map((l) => `stderr: ${l}`)); });
    this.child.stdin!.on('error', () => { /* the server went away; reported by exit */ });
  }

  request(method: string, params: Json, timeoutMs = 30_000): Promise<Json> {
    const id = ++this.#id;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.#pending.delete(id); reject(new Error(`${method}: no answer within ${timeoutMs} ms`)); }, timeoutMs);
      this.#pending.set(id, {
        method,
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.#send({ jsonrpc: '2.0', id, method, params });
    });
  }

  notify(method: string, params: Json): void { this.#send({ jsonrpc: '2.0', method, params }); }

  /** Resolve on the first notification `method` whose params pass `test` (past ones count). */
  waitFor(method: string, test: (p: Json) => boolean, timeoutMs: number): Promise<Json> {
    const seen = this.notes.find((n) => n.method === method && test(n.params));
    if (seen) return Promise.resolve(seen.params);
    return new Promise((resolve, reject) => {
      const w = { method, test, resolve: (p: Json) => { clearTimeout(timer); resolve(p); } };
      const timer = setTimeout(() => { this.#waiters.splice(this.#waiters.indexOf(w), 1); reject(new Error(`no ${method} notification within ${timeoutMs} ms`)); }, timeoutMs);
      this.#waiters.push(w);
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    try {
      await this.request('shutdown', null, 5000);
      this.notify('exit', null);
    } catch { /* kill below */ }
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
    await this.#exited;
    clearTimeout(t);
  }

  #send(msg: object): void {
    const body = Buffer.from(JSON.stringify(msg));
    this.child.stdin!.write(Buffer.concat([Buffer.from(`Content-Length: ${body.length}\r\n\r\n`), body]));
  }

  #onData(d: Buffer): void {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, d]) : d;
    for (;;) {
      const end = this.#buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      const m = /content-length:\s*(\d+)/i.exec(this.#buf.subarray(0, end).toString('ascii'));
      if (!m) throw new Error('LSP frame without Content-Length');
      const len = Number(m[1]);
      if (this.#buf.length < end + 4 + len) return;
      const msg = JSON.parse(this.#buf.subarray(end + 4, end + 4 + len).toString('utf8')) as { id?: number | string; method?: string; params?: Json; result?: Json; error?: { message: string } };
      this.#buf = this.#buf.subarray(end + 4 + len);
      this.#dispatch(msg);
    }
  }

  #dispatch(msg: { id?: number | string; method?: string; params?: Json; result?: Json; error?: { message: string } }): void {
    if (msg.method !== undefined && msg.id !== undefined) {
      // A request from the server: answer like a plain editor.
      this.#send({ jsonrpc: '2.0', id: msg.id, result: serverRequest(msg.method, msg.params) });
      return;
    }
    if (msg.method !== undefined) {
      this.notes.push({ method: msg.method, params: msg.params });
      if (msg.method === 'window/logMessage') this.log.push(`log: ${(msg.params as { message: string }).message}`);
      for (const w of [...this.#waiters]) {
        if (w.method === msg.method && w.test(msg.params)) { this.#waiters.splice(this.#waiters.indexOf(w), 1); w.resolve(msg.params); }
      }
      return;
    }
    const p = this.#pending.get(msg.id as number);
    if (!p) return;
    this.#pending.delete(msg.id as number);
    if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`));
    else p.resolve(msg.result);
  }
}

/** What an editor answers to the server's requests. */
function serverRequest(method: string, params: Json): Json {
  if (method === 'workspace/configuration') {
    const items = (params as { items?: unknown[] }).items ?? [];
    return items.map(() => null);
  }
  return null;
}
