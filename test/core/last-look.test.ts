/**
 * "A request whose client is already gone is never sent": the last look before forwarding sees a
 * reset that arrived in the same write as the request (HTTP/2 HEADERS + DATA + RST_STREAM; an
 * HTTP/1.1 request followed by the connection's close), on every path a completion takes.
 */
import net from 'node:net';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import type { TestGateway } from '../helpers/gateway.ts';
import { waitFor } from '../helpers/h2.ts';
import { FLAG, FRAME, rawConnect, request, rst } from '../helpers/raw-h2.ts';

const body = (i: number): string => JSON.stringify({ model: 'ghost-small', prompt: `p${i}`, stream: true });
const cancelledBeforeForward = async (g: TestGateway): Promise<number> => (await g.gw.metrics.cancelledBeforeForward.get()).values[0]?.value ?? 0;

t.test('HTTP/2: HEADERS, DATA and RST_STREAM in one write never reach the model', async (t) => {
  const g = await startGateway(t);
  const c = await rawConnect(g.url);
  t.teardown(() => c.socket.destroy());
  // Fast lane with and without Content-Length; a content type only Fastify takes.
  const variants: Array<[string, Array<[string, string]>, boolean]> = [
    ['fast lane, content-length', [], true],
    ['fast lane, no content-length', [], false],
    ['Fastify', [['content-type', 'Application/JSON']], true],
  ];
  const perVariant = 20;
  let id = 1;
  for (const [name, extra, cl] of variants) {
    for (let i = 0; i < perVariant; i++, id += 2) {
      c.socket.write(Buffer.concat([request(id, '/v1/completions', body(id), [['x-request-id', `gone-${id}`], ...extra], cl), rst(id)]));
    }
    t.comment(`${name}: ${perVariant} sent`);
  }
  const total = variants.length * perVariant;
  await waitFor(`${total} requests counted as cancelled before forward`, async () => (await cancelledBeforeForward(g)) >= total, 20_000);
  t.equal(await cancelledBeforeForward(g), total, 'every one counted');
  // A control on the same connection, without a reset, does reach the model: the connection works
  // and the model would have seen the others had they been sent.
  const control = id;
  c.socket.write(request(control, '/v1/completions', body(control), [['x-request-id', 'control']]));
  await waitFor('the control response to end', () => c.frames.some((f) => f.streamId === control && f.type === FRAME.DATA && (f.flags & FLAG.END_STREAM) !== 0), 10_000);
  const seen = await g.modelRequests();
  t.same(seen.map((r) => r.id), ['control'], 'the model saw only the control request');
  t.equal((await g.modelStats()).requests, 1);
  await waitFor('nothing in flight', () => g.gw.runtime.inflight === 0);
});

t.test('HTTP/1.1: a request followed by the close in one write never reaches the model', async (t) => {
  const g = await startGateway(t);
  const u = new URL(g.url);
  const n = 50;
  const sent: Array<Promise<void>> = [];
  for (let i = 0; i < n; i++) {
    const b = body(i);
    const head = `POST /v1/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: ${b.length}\r\nx-request-id: h1-gone-${i}\r\n\r\n`;
    sent.push(new Promise((resolve) => {
      const s = net.connect(Number(u.port), u.hostname, () => {
        // Half the sockets send FIN with the request (end), half close at once (destroy).
        if (i % 2 === 0) s.end(head + b);
        else { s.write(head + b); s.destroy(); }
      });
      s.on('error', () => { /* the gateway may reset it */ });
      s.once('close', () => resolve());
      s.resume();
    }));
  }
  await Promise.all(sent);
  await waitFor(`${n} requests counted as cancelled before forward`, async () => (await cancelledBeforeForward(g)) >= n, 20_000);
  t.equal(await cancelledBeforeForward(g), n, 'every one counted');
  t.same(await g.modelRequests(), [], 'the model saw none of them');
  await waitFor('nothing in flight', () => g.gw.runtime.inflight === 0);
});

t.test('HTTP/1.1: pipelined requests in one write are all served (a queued response is not a gone client)', async (t) => {
  const g = await startGateway(t);
  const u = new URL(g.url);
  const req = (i: number): string => {
    const b = body(i);
    return `POST /v1/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: ${b.length}\r\nx-request-id: pipe-${i}\r\n\r\n${b}`;
  };
  let text = '';
  const s = net.connect(Number(u.port), u.hostname, () => s.write(req(1) + req(2) + req(3)));
  t.teardown(() => s.destroy());
  s.setEncoding('utf8');
  s.on('data', (d: string) => { text += d; });
  await waitFor('three responses to end', () => (text.match(/data: \[DONE\]/g) ?? []).length === 3, 10_000);
  t.same(text.match(/^HTTP\/1\.1 \d+/gm), ['HTTP/1.1 200', 'HTTP/1.1 200', 'HTTP/1.1 200']);
  t.same((await g.modelRequests()).map((r) => r.id).sort(), ['pipe-1', 'pipe-2', 'pipe-3']);
  t.equal(await cancelledBeforeForward(g), 0);
});
