/**
 * The one body reader of the data plane: the HTTP/2 fast lane calls it on the raw stream, the
 * Fastify routes from their `application/json` content-type parser (on the request stream).
 * It reads exactly Content-Length bytes when declared (HTTP/2 clients often omit it), never more
 * than `limits.bodyBytes`, and parses with the one parser (`parseJsonBody`: depth limit, then
 * secure-json-parse). Errors are the catalog's: 413 too large, 400 length mismatch or not JSON,
 * and, with a `hold`, 429/503 when unfinished bodies would pass the client address's or the
 * process's budget (core/server/body-budget.ts).
 *
 * A body with a Content-Encoding other than `identity` (gzip, deflate, br, zstd, anything) is
 * refused before it is read: 415 `GW_ERR_REQ_UNSUPPORTED_ENCODING`, naming the encoding, with
 * `Accept-Encoding: identity` (RFC 9110 §12.5.3). The gateway reads and edits these bodies, and
 * would otherwise parse compressed bytes as JSON (a 400 that blames the JSON) or, worse, apply
 * policies to a plain body the client labelled compressed and forward it without its label.
 * Completion bodies are a few KB, sent by IDEs and SDKs that do not compress them; decoding
 * would add CPU to the hot path and a decompression-bomb surface for no client that needs it.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { GatewayError } from '../errors.ts';
import type { BodyBudget, BodyCaps } from '../server/body-budget.ts';
import { parseJsonBody } from '../server/json-body.ts';

/** Called once: an error to answer, or the bytes and their parse. Not called if the client went away. */
export type BodyDone = (err: GatewayError | undefined, raw: Buffer | undefined, body: unknown) => void;

/** The bytes a body holds while it is being received are taken from `budget` for `ip` (core/server/body-budget.ts). */
export interface BodyHold {
  readonly budget: BodyBudget;
  readonly ip: string;
  readonly caps: BodyCaps;
}

/**
 * Read and parse a JSON request body from `source`, by its `headers`' Content-Length (absent:
 * read to the end) and Content-Encoding (anything but `identity` is refused). A client that goes away mid-body gets no callback: there is no one
 * to answer, and whoever watches the stream (the session guard, the request's close) counts it.
 */
export function readJsonBody(source: Readable, headers: IncomingHttpHeaders, limit: number, maxDepth: number, done: BodyDone, hold?: BodyHold): void {
  const encoding = headers['content-encoding'];
  if (encoding !== undefined && !isIdentity(encoding)) return done(unsupportedEncoding(encoding), undefined, undefined);
  const coding = unsupportedTransferCoding(headers);
  if (coding !== undefined) return done(coding, undefined, undefined);
  const declared = headers['content-length'];
  const len = declared === undefined ? -1 : Number(declared);
  if (Number.isNaN(len)) return done(new GatewayError('GW_ERR_REQ_BAD_REQUEST', ['Content-Length is not a number']), undefined, undefined);
  if (len > limit) return done(new GatewayError('GW_ERR_REQ_BODY_TOO_LARGE', [limit]), undefined, undefined);
  const r = new BodyRead(source, len, limit, maxDepth, done, hold);
  source.on('data', r.onData);
  source.on('end', r.onEnd);
  source.on('error', noop);
  // A client that goes away mid-body gives back what its body held: an HTTP/1.1 request cut off
  // emits no 'end', only 'close' (test/core/body-budget.test.ts, both protocols). `on`, not
  // `once`: release is idempotent, and `once` would allocate a wrapper per request.
  if (hold !== undefined) source.on('close', r.release);
}

/** One read in progress (a class: one allocation and its bound listeners, a fixed shape). */
class BodyRead {
  readonly source: Readable;
  readonly len: number;
  readonly limit: number;
  readonly maxDepth: number;
  readonly done: BodyDone;
  readonly hold: BodyHold | undefined;
  first: Buffer | undefined = undefined;
  chunks: Buffer[] | undefined = undefined;
  got = 0;
  /** Bytes taken from the hold's budget and not given back yet. */
  held = 0;
  constructor(source: Readable, len: number, limit: number, maxDepth: number, done: BodyDone, hold: BodyHold | undefined) {
    this.source = source; this.len = len; this.limit = limit; this.maxDepth = maxDepth; this.done = done; this.hold = hold;
  }

  readonly onData = (c: Buffer): void => {
    this.got += c.length;
    if (this.got > this.limit) return this.refuse(new GatewayError('GW_ERR_REQ_BODY_TOO_LARGE', [this.limit]));
    const h = this.hold;
    if (h !== undefined) {
      const over = h.budget.take(h.ip, c.length, h.caps);
      if (over !== undefined) return this.refuse(over);
      this.held += c.length;
    }
    if (this.first === undefined) this.first = c;
    else (this.chunks ??= [this.first]).push(c);
  };

  /** Stop keeping the body (the rest is read and dropped), give back what it held, answer `err`. */
  refuse(err: GatewayError): void {
    this.source.removeListener('data', this.onData);
    this.source.removeListener('end', this.onEnd);
    this.first = undefined; this.chunks = undefined;
    this.release();
    // With no 'data' listener left the stream stops flowing, and what the client still sends
    // would pile up unread: 100 such HTTP/2 streams went over the session's memory limit.
    this.source.resume();
    this.done(err, undefined, undefined);
  }

  /** Give back the bytes taken from the budget (once; also when the client goes away). */
  readonly release = (): void => {
    if (this.held === 0) return;
    this.hold!.budget.release(this.hold!.ip, this.held);
    this.held = 0;
  };

  readonly onEnd = (): void => {
    this.source.removeListener('data', this.onData);
    // Complete: no longer a body being received (the request holds it from here).
    this.release();
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

/** `identity` (any case, surrounding spaces), or an empty header: no coding applied. */
function isIdentity(encoding: string): boolean {
  const e = encoding.trim();
  return e === '' || e.toLowerCase() === 'identity';
}

function unsupportedEncoding(encoding: string): GatewayError {
  return new GatewayError('GW_ERR_REQ_UNSUPPORTED_ENCODING', [shown(encoding)], { headers: { 'accept-encoding': 'identity' } });
}

/**
 * An HTTP/1.1 request whose Transfer-Encoding is more than `chunked` (`gzip, chunked`): Node's
 * parser takes it and undoes only the chunking, so the body read would still be gzip, and a
 * passthrough would forward it without the label. 501 (RFC 9112 §6.1), else undefined.
 */
export function unsupportedTransferCoding(headers: IncomingHttpHeaders): GatewayError | undefined {
  const te = headers['transfer-encoding'];
  if (te === undefined || te.trim().toLowerCase() === 'chunked') return undefined;
  return new GatewayError('GW_ERR_REQ_UNSUPPORTED_TRANSFER_CODING', [shown(te)]);
}

/** A header value of the client's, to quote in a message: printable ASCII only, and not much of it. */
function shown(v: string): string {
  return v.replace(/[^\x20-\x7e]/g, '?').slice(0, 64);
}

function noop(): void { /* a reset while reading: nothing to answer (see readJsonBody) */ }
