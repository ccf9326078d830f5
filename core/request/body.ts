/**
 * The one body reader of the data plane: the HTTP/2 fast lane calls it on the raw stream, the
 * Fastify routes from their `application/json` content-type parser (on the request stream).
 * It reads exactly Content-Length bytes when declared (HTTP/2 clients often omit it), never more
 * than `limits.bodyBytes`, and parses with the one parser (`parseJsonBody`: depth limit, then
 * secure-json-parse). Errors are the catalog's: 413 too large, 400 length mismatch or not JSON.
 */
import type { Readable } from 'node:stream';
import { GatewayError } from '../errors.ts';
import { parseJsonBody } from '../server/json-body.ts';

/** Called once: an error to answer, or the bytes and their parse. Not called if the client went away. */
export type BodyDone = (err: GatewayError | undefined, raw: Buffer | undefined, body: unknown) => void;

/**
 * Read and parse a JSON request body from `source`. `declared` is the Content-Length header
 * (undefined when absent). A client that goes away mid-body gets no callback: there is no one
 * to answer, and whoever watches the stream (the session guard, the request's close) counts it.
 */
export function readJsonBody(source: Readable, declared: string | undefined, limit: number, maxDepth: number, done: BodyDone): void {
  const len = declared === undefined ? -1 : Number(declared);
  if (Number.isNaN(len)) return done(new GatewayError('GW_ERR_REQ_BAD_REQUEST', ['Content-Length is not a number']), undefined, undefined);
  if (len > limit) return done(new GatewayError('GW_ERR_REQ_BODY_TOO_LARGE', [limit]), undefined, undefined);
  const r = new BodyRead(source, len, limit, maxDepth, done);
  source.on('data', r.onData);
  source.on('end', r.onEnd);
  source.on('error', noop);
}

/** One read in progress (a class: one allocation and two bound listeners, a fixed shape). */
class BodyRead {
  readonly source: Readable;
  readonly len: number;
  readonly limit: number;
  readonly maxDepth: number;
  readonly done: BodyDone;
  first: Buffer | undefined = undefined;
  chunks: Buffer[] | undefined = undefined;
  got = 0;
  constructor(source: Readable, len: number, limit: number, maxDepth: number, done: BodyDone) {
    this.source = source; this.len = len; this.limit = limit; this.maxDepth = maxDepth; this.done = done;
  }

  readonly onData = (c: Buffer): void => {
    this.got += c.length;
    if (this.got > this.limit) {
      this.source.removeListener('data', this.onData);
      this.source.removeListener('end', this.onEnd);
      this.done(new GatewayError('GW_ERR_REQ_BODY_TOO_LARGE', [this.limit]), undefined, undefined);
      return;
    }
    if (this.first === undefined) this.first = c;
    else (this.chunks ??= [this.first]).push(c);
  };

  readonly onEnd = (): void => {
    this.source.removeListener('data', this.onData);
    const got = this.got;
    if (got === 0) return this.done(new GatewayError('GW_ERR_REQ_INVALID_JSON'), undefined, undefined);
    if (this.len >= 0 && got !== this.len) return this.done(new GatewayError('GW_ERR_REQ_BAD_REQUEST', ['Content-Length does not match the body']), undefined, undefined);
    const raw = this.chunks ? Buffer.concat(this.chunks, got) : this.first!;
    let body: unknown;
    try {
      body = parseJsonBody(raw, this.maxDepth);
    } catch (e) {
      return this.done(e as GatewayError, undefined, undefined);
    }
    this.done(undefined, raw, body);
  };
}

function noop(): void { /* a reset while reading: nothing to answer (see readJsonBody) */ }
