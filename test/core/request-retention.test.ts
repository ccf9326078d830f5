/**
 * A finished request is not kept reachable by the gateway. Whatever a long-lived object (a
 * session's list, a map, a timer) still reaches when a scavenge runs is copied, then promoted to
 * the old generation and freed only by a mark-compact; and a request's whole graph (its Call,
 * Exchange, body, upstream stream and their buffers) hangs off its client stream's listeners.
 * The HTTP/2 body deadlines kept every stream with a request body in a per-session list until 64
 * had gathered, reachable even for a full GC (it did not change the share that survives
 * scavenges: bench/README.md, GC).
 *
 * Checked with the streams themselves: weak references to every HTTP/2 stream of the gateway's
 * (its clients' and its upstream ones, from Node's diagnostics channels), then a full GC once the
 * requests are over. The test's own client streams are not counted.
 */
import dc from 'node:diagnostics_channel';
import type { ClientHttp2Stream, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import v8 from 'node:v8';
import vm from 'node:vm';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post, waitFor } from '../helpers/h2.ts';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const N = 40;

t.test('HTTP/2: once requests are over, none of their streams is still reachable', async (t) => {
  const g = await startGateway(t, { modelArgs: ['--ttft-ms', '0', '--token-ms', '0', '--tokens', '2'] });
  const modelHost = new URL(g.model!.url).host;
  const client: Array<WeakRef<ServerHttp2Stream>> = [];
  const upstream: Array<WeakRef<ClientHttp2Stream>> = [];
  let closed = 0;
  const onServer = (m: unknown): void => { client.push(new WeakRef((m as { stream: ServerHttp2Stream }).stream)); };
  const onClient = (m: unknown): void => {
    const { stream, headers } = m as { stream: ClientHttp2Stream; headers: IncomingHttpHeaders };
    if (headers[':authority'] === modelHost) upstream.push(new WeakRef(stream));
  };
  const onServerClose = (): void => { closed++; };
  dc.subscribe('http2.server.stream.created', onServer);
  dc.subscribe('http2.client.stream.created', onClient);
  dc.subscribe('http2.server.stream.close', onServerClose);
  t.teardown(() => {
    dc.unsubscribe('http2.server.stream.created', onServer);
    dc.unsubscribe('http2.client.stream.created', onClient);
    dc.unsubscribe('http2.server.stream.close', onServerClose);
  });

  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  for (let i = 0; i < N; i++) {
    const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'def f():', stream: true, max_tokens: 2 });
    t.equal(r.status, 200);
  }
  await waitFor('the gateway to finish every request', () => closed === N && g.gw.runtime.inflight === 0);
  t.equal(client.length, N);
  t.equal(upstream.length, N);
  // Node destroys a closed stream a tick later, and frees its native half on the next turns.
  for (let i = 0; i < 3; i++) { await new Promise((r) => setImmediate(r)); gc(); }
  const alive = (refs: Array<WeakRef<object>>): number => refs.filter((r) => r.deref() !== undefined).length;
  // At most the session's last request may still be referenced (by the session's own state).
  t.ok(alive(client) <= 1, `client streams still reachable: ${alive(client)} of ${N}`);
  t.ok(alive(upstream) <= 1, `upstream streams still reachable: ${alive(upstream)} of ${N}`);
});
