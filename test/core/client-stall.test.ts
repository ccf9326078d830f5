/**
 * `limits.clientStallMs` against HTTP/2 clients that ask for streamed completions with a receive
 * window of 0 and never read (h2c and TLS, both lanes): after clientStallMs every such stream is
 * reset (the client gets RST_STREAM, the gateway lets go of the stream and its buffered bytes and
 * of its in-flight slot), an upstream stream still running is cancelled (the model sees CANCEL),
 * and each is counted as `client_stalled`. Short completions too: their upstream response ends
 * before any write is refused, and before the fix they were counted `ok` while the client had
 * taken none of it, and their streams stayed open on the gateway with their bytes, never reset.
 */
import http2 from 'node:http2';
import { rmSync } from 'node:fs';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import type { TestGateway } from '../helpers/gateway.ts';
import { connect, post, waitFor } from '../helpers/h2.ts';
import { FRAME, rawConnect, request, settings } from '../helpers/raw-h2.ts';
import { makeCert } from '../helpers/tls.ts';

const { NGHTTP2_CANCEL } = http2.constants;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const STALL_MS = 600;

async function outcomes(g: TestGateway): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await g.gw.metrics.requests.get()).values) out[String(v.labels.outcome)] = (out[String(v.labels.outcome)] ?? 0) + v.value;
  return out;
}

for (const [name, fastLane, tls] of [['h2c', true, false], ['h2c, server.fastLane: false', false, false], ['TLS', true, true]] as const) t.test(`a window-0 client is let go after clientStallMs (${name})`, async (t) => {
  const cert = makeCert();
  t.teardown(() => rmSync(cert.dir, { recursive: true, force: true }));
  const g = await startGateway(t, {
    files: { 'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
    extraConfig: `limits: { clientStallMs: ${STALL_MS} }\nserver: { fastLane: ${fastLane} }`,
    modelArgs: ['--ttft-ms', '5', '--token-ms', '1', '--tokens', '8'],
  });
  const url = tls ? g.gw.addresses!.tls! : g.url;
  const c = await rawConnect(url, settings({ [SETTINGS_INITIAL_WINDOW_SIZE]: 0 }), undefined, tls ? { ca: cert.cert } : undefined);
  t.teardown(() => c.socket.destroy());
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'never read', stream: true });
  // 10 long completions (still streaming when the stall is noticed) and 10 short ones (a few
  // hundred bytes: the upstream response ends before any write is refused).
  const long: number[] = [];
  const short: number[] = [];
  const frames: Buffer[] = [];
  for (let i = 0, id = 1; i < 20; i++, id += 2) {
    (i < 10 ? long : short).push(id);
    frames.push(request(id, '/v1/completions', body, [['x-request-id', `stall-${id}`], ['x-tokens', i < 10 ? '5000' : '5'], ['x-token-ms', '1']]));
  }
  const sent = performance.now();
  c.socket.write(Buffer.concat(frames));

  const resets = (ids: number[]): number => new Set(c.frames.filter((f) => f.type === FRAME.RST_STREAM && ids.includes(f.streamId)).map((f) => f.streamId)).size;
  await waitFor('RST_STREAM for every stream', () => resets([...long, ...short]) === 20, 20_000);
  const took = performance.now() - sent;
  t.ok(took >= STALL_MS, `not before clientStallMs (${Math.round(took)} ms)`);
  t.equal(resets(short), 10, 'the short completions were reset too');
  t.equal(c.frames.filter((f) => f.type === FRAME.DATA && f.payload.length > 0).length, 0, 'the client took no byte');
  await waitFor('the model to see the long ones cancelled', async () => (await g.modelStats()).aborts.filter((a) => a.id.startsWith('stall-')).length >= 10, 10_000);
  const aborts = (await g.modelStats()).aborts.filter((a) => a.id.startsWith('stall-'));
  t.same(aborts.map((a) => a.rstCode), Array(10).fill(NGHTTP2_CANCEL), 'each running upstream stream got RST_STREAM(CANCEL)');
  await waitFor('every stream accounted for', async () => (await outcomes(g)).client_stalled === 20, 10_000);
  t.same(await outcomes(g), { client_stalled: 20 }, 'all counted client_stalled, none ok');
  t.equal(g.gw.runtime.inflight, 0, 'nothing in flight');
  t.equal(g.gw.clientInflight.of('127.0.0.1'), 0, 'the client\'s in-flight slots are free');

  // The same connection's later requests, and another client, are served.
  const s = await connect(url, tls ? { ca: cert.cert, servername: 'localhost' } : {});
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'by', stream: true });
  t.equal(r.events.at(-1), '[DONE]', 'a bystander is served');
});
