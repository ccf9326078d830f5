/**
 * An 'error' event on a listening server with no listener is an uncaught exception: the whole
 * gateway, every client's stream with it, would end. After listen a net.Server emits one when an
 * accept fails (Node's net.js `onconnection`: out of descriptors or memory for a moment) or when
 * anything else emits it; the server itself goes on accepting. So: log it, and keep serving
 * (test/net/server-errors.test.ts). Errors of one connection or session do not come here: Node
 * turns an HTTP/2 session's into the server's 'sessionError', a TLS handshake's into its
 * 'tlsClientError' (and then 'clientError', core/server/client-error.ts), an HTTP/1.1 socket's
 * into the HTTP/1.1 front's 'clientError'; none of those ends the process unheard.
 *
 * One line per code at first, then at most one per code per 10 s with how many were not logged
 * (`repeats`): accepts that fail fail for every connection that comes meanwhile.
 */
import type { EventEmitter } from 'node:events';
import type { Logger } from '../types.ts';

const QUIET_MS = 10_000;

/** Log the errors `server` emits once it is listening (`listener` names it in the line). */
export function logServerErrors(server: EventEmitter & { readonly listening: boolean }, log: Pick<Logger, 'error'>, listener: string, now: () => number = Date.now): void {
  const seen = new Map<string, { at: number; repeats: number }>();
  server.on('error', (e: NodeJS.ErrnoException) => {
    // Before listening, an error is a bind failure, which listen() reports to its caller.
    if (!server.listening) return;
    const code = e.code ?? 'unknown';
    const t = now();
    const s = seen.get(code);
    if (s !== undefined && t - s.at < QUIET_MS) { s.repeats++; return; }
    seen.set(code, { at: t, repeats: 0 });
    log.error({ listener, code, err: e.message, ...(s !== undefined && s.repeats > 0 ? { repeats: s.repeats } : {}) }, 'data plane server error; still serving');
  });
}
