/**
 * The gateway's logger: pino, JSON lines on stdout (or a given stream), built directly (the
 * Fastify apps on the data and admin planes are given it as their `loggerInstance`).
 */
import { pino } from 'pino';
import type { Logger } from 'pino';

/**
 * Keys hidden wherever they appear at these paths. Belt and braces: nothing we log carries them,
 * but if a future line does, they are hidden.
 */
export const REDACT_PATHS = ['authorization', '*.authorization', 'headers.authorization', 'req.headers.authorization', 'token', '*.token', 'key', '*.key', 'secret', '*.secret'];

export function createLogger(o: { level: string; stream?: NodeJS.WritableStream }): Logger {
  const opts = { level: o.level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } };
  return o.stream ? pino(opts, o.stream as pino.DestinationStream) : pino(opts);
}
