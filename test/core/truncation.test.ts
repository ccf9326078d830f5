/**
 * A truncated completion never looks complete (#10.1). The upstream ends a response early in
 * each way a peer can: RST_STREAM(NO_ERROR) mid-stream, GOAWAY then a closed connection
 * mid-stream, an HTTP/1.1 body cut mid-chunk or short of its Content-Length. Each must reach
 * the client, over HTTP/2 and over HTTP/1.1, as a visible failure (an SSE error event, then an
 * abnormal end), never as a clean end. A control upstream that ends properly proves the tests
 * can tell the two apart.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import http2 from 'node:http2';
import { finished } from 'node:stream/promises';
import t from 'tap';
import type { Test } from 'tap';
import type { UpstreamConfig } from '../../core/config/model.ts';
import { GatewayMetrics } from '../../core/metrics.ts';
import { silentLogger } from '../../core/plugin-context.ts';
import { createUpstream } from '../../core/upstream/client.ts';
import { startGateway } from '../helpers/gateway.ts';
import type { TestGateway } from '../helpers/gateway.ts';
import { collect, connect, open, post, post1, until } from '../helpers/h2.ts';
import type { Response } from '../helpers/h2.ts';
import { startRawH2, upstreamYaml } from '../helpers/raw-h2-upstream.ts';
import type { RawH2Conn } from '../helpers/raw-h2-upstream.ts';

const { NGHTTP2_NO_ERROR, NGHTTP2_INTERNAL_ERROR } = http2.constants;
const FIRST = 'data: {"choices":[{"text":"a"}]}\n\n';
const BODY = { model: 'ghost-small', prompt: 'x', stream: true };

/** A gateway in front of an h2 fake that answers each request with `fault`. */
async function h2Fault(t: Test, fault: (c: RawH2Conn, id: number) => void): Promise<TestGateway> {
  const up = await startRawH2(t, { onRequest: (c, id) => fault(c, id) });
  return startGateway(t, { noModel: true, upstreamsYaml: () => upstreamYaml(up.url, 'h2c') });
}

/** A raw HTTP/1.1 upstream: reads one request per connection, writes `reply`'s bytes, then closes. */
async function h1Fault(t: Test, reply: string[]): Promise<TestGateway> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    let buf = '';
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const len = Number(/content-length:\s*(\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
      if (buf.length < end + 4 + len) return;
      buf = '';
      // Each part in its own write, so the gateway relays the first before the cut.
      let i = 0;
      const next = (): void => {
        if (i < reply.length) { socket.write(reply[i++]!, () => setImmediate(next)); return; }
        socket.end();
      };
      next();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => { for (const s of sockets) s.destroy(); server.close(); });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return startGateway(t, { noModel: true, upstreamsYaml: () => upstreamYaml(url, 'http1') });
}

/** What a client must see for a response the upstream did not finish. */
function assertFailure(t: Test, r: Response, proto: 'h2' | 'h1'): void {
  t.equal(r.status, 200, 'headers had gone out');
  t.notOk(r.complete, 'never a clean end');
  t.match(r.text, FIRST.trim(), 'the part that arrived was relayed');
  t.match(r.text, /event: error\ndata: \{"error":\{"code":"GW_ERR_UPSTREAM_ABORTED"/, 'an SSE error event says why');
  t.notMatch(r.text, /\[DONE\]/);
  if (proto === 'h2') t.equal(r.rstCode, NGHTTP2_INTERNAL_ERROR, 'h2: RST_STREAM(INTERNAL_ERROR), not END_STREAM');
  else t.ok(r.error, 'h1: the connection is cut mid-body');
}

/** Both client protocols against one gateway; the gateway must end with no request in flight. */
async function bothClients(t: Test, g: TestGateway, check: (r: Response, proto: 'h2' | 'h1') => void): Promise<void> {
  const s = await connect(g.url);
  t.teardown(() => s.close());
  check(await post(s, '/v1/completions', BODY), 'h2');
  check(await post1(`${g.url}/v1/completions`, BODY), 'h1');
  await until(() => g.gw.runtime.inflight === 0);
}

t.test('control: an upstream that ends with END_STREAM gives a clean, complete response', async (t) => {
  const g = await h2Fault(t, (c, id) => c.complete(id));
  await bothClients(t, g, (r, proto) => {
    t.equal(r.status, 200);
    t.ok(r.complete, `${proto}: clean end`);
    t.equal(r.events.at(-1), '[DONE]');
    if (proto === 'h2') t.equal(r.rstCode, NGHTTP2_NO_ERROR);
  });
});

t.test('h2 upstream: RST_STREAM(NO_ERROR) mid-stream is a failure, not a clean end', async (t) => {
  const g = await h2Fault(t, (c, id) => {
    c.respond(id);
    c.data(id, FIRST);
    setTimeout(() => c.rst(id, NGHTTP2_NO_ERROR), 20);
  });
  await bothClients(t, g, (r, proto) => assertFailure(t, r, proto));
});

t.test('h2 upstream: GOAWAY(NO_ERROR) and a closed connection mid-stream is a failure', async (t) => {
  const g = await h2Fault(t, (c, id) => {
    c.respond(id);
    c.data(id, FIRST);
    setTimeout(() => { c.goaway(id, NGHTTP2_NO_ERROR); c.socket.end(); }, 20);
  });
  await bothClients(t, g, (r, proto) => assertFailure(t, r, proto));
});

t.test('h1 upstream: the connection closes mid-chunked body', async (t) => {
  const g = await h1Fault(t, [
    'HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n',
    `${Buffer.byteLength(FIRST).toString(16)}\r\n${FIRST}\r\n`,
    // half of a chunk, then FIN: no terminating 0-chunk
    '40\r\ndata: {"choices"',
  ]);
  await bothClients(t, g, (r, proto) => assertFailure(t, r, proto));
});

t.test('h1 upstream: fewer bytes than Content-Length, then the connection closes', async (t) => {
  const g = await h1Fault(t, [
    'HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 500\r\n\r\n',
    FIRST,
  ]);
  await bothClients(t, g, (r, proto) => assertFailure(t, r, proto));
});

t.test('the upstream client\'s complete() (what mirror reads for its shadow) is true only after END_STREAM', async (t) => {
  let n = 0;
  const up = await startRawH2(t, {
    onRequest: (c, id) => {
      if (++n === 1) return c.complete(id);
      c.respond(id);
      c.data(id, FIRST);
      setTimeout(() => c.rst(id, NGHTTP2_NO_ERROR), 20);
    },
  });
  const config: UpstreamConfig = {
    url: up.url, protocol: 'h2c', pool: { size: 1, pingIntervalMs: 0, warm: false },
    timeouts: { connectMs: 2000, firstByteMs: 10_000, idleMs: 10_000 }, forwardHeaders: [], maxRetries: 1,
  };
  const client = createUpstream('raw', config, { log: silentLogger, metrics: new GatewayMetrics(undefined, { defaults: false }), readSecret: () => '' }, 'raw');
  t.teardown(() => client.close());
  const read = async (): Promise<boolean> => {
    const res = await client.send({ path: '/v1/completions', headers: {}, body: Buffer.from('{}') });
    res.body.resume();
    await finished(res.body);
    return res.complete();
  };
  t.equal(await read(), true, 'END_STREAM: complete');
  t.equal(await read(), false, 'RST_STREAM(NO_ERROR) after a chunk: not complete, though the stream ended without error');
});

t.test('the bundled model server stopped with SIGTERM mid-stream: streams drain to [DONE]; those cut at the drain deadline fail visibly', async (t) => {
  for (const cut of [false, true]) {
    const g = await startGateway(t, { modelArgs: ['--ttft-ms', '5', '--token-ms', '20', '--tokens', cut ? '500' : '15', '--drain-ms', cut ? '200' : '10000'] });
    const s = await connect(g.url);
    t.teardown(() => s.close());
    const streams = Array.from({ length: 20 }, () => open(s, '/v1/completions', BODY));
    const results = streams.map((st) => collect(st));
    await Promise.all(streams.map((st) => new Promise<void>((r) => st.once('data', () => r()))));
    const exited = new Promise<number | null>((r) => g.model!.child.once('exit', (code) => r(code)));
    g.model!.child.kill('SIGTERM');
    const rs = await Promise.all(results);
    t.equal(await exited, 0);
    const clean = rs.filter((r) => r.complete);
    const truncatedButClean = clean.filter((r) => r.events.at(-1) !== '[DONE]');
    t.equal(truncatedButClean.length, 0, 'no clean-but-truncated response');
    if (!cut) {
      t.equal(clean.length, 20, 'all 20 finished during the drain');
      t.ok(rs.every((r) => r.events.length === 16), 'every token and [DONE]');
    } else {
      t.equal(clean.length, 0, 'streams cut at the drain deadline all fail');
      t.ok(rs.every((r) => /GW_ERR_UPSTREAM_ABORTED/.test(r.text)), 'with a coded error event');
    }
  }
});
