/**
 * A completion cut mid-stream, behind HAProxy (#10 §1): what each leg sees. Real HAProxy on a
 * copy of docs/deploy/haproxy.cfg (plus an HTTP/1.1 listener), one in-process gateway, a raw
 * HTTP/2 upstream that sends a token and then RST_STREAM(NO_ERROR), and a TCP tap between HAProxy
 * and the gateway that decodes the frames of the backend connection.
 *
 * - gateway → HAProxy: the error event, then RST_STREAM(INTERNAL_ERROR); never END_STREAM.
 * - HAProxy → HTTP/1.1 client: the error event, then the connection closes without the
 *   terminating chunk (an abnormal end).
 * - HAProxy 2.6 → HTTP/2 client: the error event, then END_STREAM. HAProxy's H2 mux closes a
 *   stream whose server side aborted after the response headers with an empty DATA frame carrying
 *   END_STREAM (h2_do_shutw), whatever the gateway sent (RST_STREAM on an h2 backend, a close
 *   without the last chunk on an h1 one: the last subtest). No setting in haproxy.cfg changes that; the
 *   error event (and no `[DONE]`) is what tells that client the completion is cut. This test
 *   asserts that behaviour so docs/deploy/README.md stays true: if a newer HAProxy resets the
 *   stream, it fails and the README must change.
 *
 * Skipped, with a message, where haproxy is not installed.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post, post1 } from '../helpers/h2.ts';
import type { Response } from '../helpers/h2.ts';
import type { Test as Tap } from 'tap';
import { HAPROXY_CFG, findHaproxy, freePort, startHaproxy } from '../helpers/haproxy.ts';
import { startRawH2, upstreamYaml } from '../helpers/raw-h2-upstream.ts';

const { NGHTTP2_NO_ERROR, NGHTTP2_INTERNAL_ERROR } = http2.constants;
const FIRST = 'data: {"choices":[{"text":"a"}]}\n\n';
const BODY = { model: 'ghost-small', prompt: 'x', stream: true };
const ERROR_EVENT = /event: error\ndata: \{"error":\{"code":"GW_ERR_UPSTREAM_ABORTED"/;
const DATA = 0, RST_STREAM = 3, END_STREAM = 1;

interface Frame { type: number; flags: number; id: number; code?: number; text?: string }

/** Decodes the HTTP/2 frames of one direction of a connection (after the client preface, if any). */
function frameReader(skipPreface: boolean, out: Frame[]): (d: Buffer) => void {
  let buf = Buffer.alloc(0);
  let preface = skipPreface ? 24 : 0;
  return (d) => {
    buf = Buffer.concat([buf, d]);
    if (preface > 0) { const n = Math.min(preface, buf.length); buf = buf.subarray(n); preface -= n; }
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) return;
      const f: Frame = { type: buf[3]!, flags: buf[4]!, id: buf.readUInt32BE(5) & 0x7fffffff };
      const payload = buf.subarray(9, 9 + len);
      if (f.type === RST_STREAM) f.code = payload.readUInt32BE(0);
      if (f.type === DATA) f.text = payload.toString('utf8');
      out.push(f);
      buf = buf.subarray(9 + len);
    }
  };
}

async function main(haproxy: string): Promise<void> {
  const version = /version (\S+)/.exec(execFileSync(haproxy, ['-v'], { encoding: 'utf8' }))?.[1] ?? '?';
  let cut = true;
  const up = await startRawH2(t, {
    onRequest: (c, id) => {
      if (!cut) return c.complete(id);
      c.respond(id);
      c.data(id, FIRST);
      setTimeout(() => c.rst(id, NGHTTP2_NO_ERROR), 20);
    },
  });
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => upstreamYaml(up.url, 'h2c') });

  // The tap: HAProxy's backend connections go through it to the gateway's data port.
  const fromGateway: Frame[] = [];
  const sockets = new Set<net.Socket>();
  const tap = net.createServer((hp) => {
    const gw = net.connect(Number(new URL(g.url).port), '127.0.0.1');
    sockets.add(hp).add(gw);
    const read = frameReader(false, fromGateway);
    hp.pipe(gw);
    gw.on('data', (d: Buffer) => { read(d); hp.write(d); });
    gw.on('end', () => hp.end());
    hp.on('error', () => gw.destroy());
    gw.on('error', () => hp.destroy());
  });
  await new Promise<void>((r) => tap.listen(0, '127.0.0.1', r));
  t.teardown(() => { for (const s of sockets) s.destroy(); tap.close(); });
  const gateway = { port: (tap.address() as AddressInfo).port, adminPort: Number(new URL(g.adminUrl).port) };

  // The shipped config, plus a cleartext HTTP/1.1 listener (production: one TLS bind, ALPN h2,http/1.1).
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-haproxy-cut-'));
  const h1Port = await freePort();
  const shipped = readFileSync(HAPROXY_CFG, 'utf8');
  const bind = 'bind "${HAPROXY_BIND-:8443}" proto h2';
  if (!shipped.includes(bind)) throw new Error(`docs/deploy/haproxy.cfg no longer has the line ${bind}`);
  const cfg = path.join(dir, 'haproxy.cfg');
  writeFileSync(cfg, shipped.replace(bind, `${bind}\n    bind 127.0.0.1:${h1Port}`));
  const lb = await startHaproxy(t, haproxy, dir, gateway, gateway, cfg);
  const session = await connect(lb.url);
  t.teardown(() => session.destroy());

  const assertCut = (t: Tap, r: Response): void => {
    t.equal(r.status, 200, 'headers had gone out');
    t.match(r.text, FIRST.trim(), 'the token that arrived was relayed');
    t.match(r.text, ERROR_EVENT, 'then the gateway\'s error event');
    t.notMatch(r.text, /\[DONE\]/, 'never a [DONE]');
  };

  await t.test('control: a complete completion ends cleanly through HAProxy', async (t) => {
    cut = false;
    const r = await post(session, '/v1/completions', BODY);
    t.ok(r.complete, 'END_STREAM');
    t.equal(r.events.at(-1), '[DONE]');
  });

  await t.test('cut mid-stream: the gateway resets its stream to HAProxy with INTERNAL_ERROR, never END_STREAM', async (t) => {
    cut = true;
    fromGateway.length = 0;
    const r = await post(session, '/v1/completions', BODY);
    assertCut(t, r);
    const data = fromGateway.filter((f) => f.type === DATA && f.text?.includes('GW_ERR_UPSTREAM_ABORTED'));
    t.equal(data.length, 1, 'the backend stream carried the error event');
    const id = data[0]?.id;
    const onStream = fromGateway.filter((f) => f.id === id);
    t.same(onStream.filter((f) => (f.type === DATA || f.type === 1 /* HEADERS */) && (f.flags & END_STREAM) !== 0), [], 'no END_STREAM from the gateway');
    t.same(onStream.filter((f) => f.type === RST_STREAM).map((f) => f.code), [NGHTTP2_INTERNAL_ERROR], 'RST_STREAM(INTERNAL_ERROR) after the error event');

    // What HAProxy makes of it for an HTTP/2 client (see the header of this file and docs/deploy/README.md).
    t.ok(r.complete, `HAProxy ${version} ends the client's HTTP/2 stream with END_STREAM: the error event is the signal`);
    t.equal(r.rstCode, 0);
  });

  await t.test('cut mid-stream: an HTTP/1.1 client of HAProxy sees the connection close without the last chunk', async (t) => {
    cut = true;
    const r = await post1(`http://127.0.0.1:${h1Port}/v1/completions`, BODY);
    assertCut(t, r);
    t.notOk(r.complete, 'not a clean end');
    t.ok(r.error, `an abnormal end (${r.error})`);
  });

  await t.test('with `proto h1` toward the gateway instead, HAProxy ends the HTTP/2 client\'s stream the same way', async (t) => {
    // The gateway then closes its HTTP/1.1 response without the terminating chunk; HAProxy 2.6
    // still ends the client's stream with END_STREAM: the backend protocol is not the cause.
    const h1dir = path.join(dir, 'h1');
    mkdirSync(h1dir);
    const server = 'default-server proto h2 check';
    if (!shipped.includes(server)) throw new Error(`docs/deploy/haproxy.cfg no longer has ${server}`);
    const cfgH1 = path.join(h1dir, 'haproxy.cfg');
    writeFileSync(cfgH1, shipped.replace(server, 'default-server check'));
    const direct = { port: Number(new URL(g.url).port), adminPort: gateway.adminPort };
    const lbH1 = await startHaproxy(t, haproxy, h1dir, direct, direct, cfgH1);
    const s = await connect(lbH1.url);
    t.teardown(() => s.destroy());
    cut = true;
    const r = await post(s, '/v1/completions', BODY);
    assertCut(t, r);
    t.ok(r.complete, `HAProxy ${version}: END_STREAM`);
  });
}

const HAPROXY = findHaproxy();
if (!HAPROXY) {
  t.plan(0, 'haproxy is not installed (Debian: apt-get install haproxy; .ci/run does): the HAProxy end-to-end tests are skipped');
} else {
  await main(HAPROXY);
}
