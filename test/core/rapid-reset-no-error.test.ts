/**
 * Rapid reset with RST_STREAM(NO_ERROR): the reset code is the attacker's choice. A flood of
 * open+reset pairs whose resets carry NO_ERROR is cut off like one using CANCEL, and none of it
 * reaches the model.
 */
import http2 from 'node:http2';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { within } from '../helpers/h2.ts';
import { rawConnect, request, rst } from '../helpers/raw-h2.ts';

const { NGHTTP2_NO_ERROR, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

t.test('an open+reset flood with RST_STREAM(NO_ERROR) is cut off; none of it reaches the model', async (t) => {
  const g = await startGateway(t, { modelArgs: ['--ttft-ms', '5', '--token-ms', '1', '--tokens', '8'] });
  const c = await rawConnect(g.url);
  t.teardown(() => c.socket.destroy());
  let cutCode: number | undefined;
  void c.goaway.then((code) => { cutCode = code; });
  let closed = false;
  void c.closed.then(() => { closed = true; });
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'attack', stream: true });
  let sent = 0;
  let id = 1;
  // Batches of 100 open+reset pairs, one write each, until the gateway cuts us off. nghttp2's own
  // reset bucket (http2.streamResetBurst, 10000 by default) would end it much later: 20000 caps it.
  while (cutCode === undefined && !closed && sent < 20_000) {
    const batch: Buffer[] = [];
    for (let i = 0; i < 100; i++, id += 2) batch.push(request(id, '/v1/completions', body, [['x-request-id', `atk-${id}`]]), rst(id, NGHTTP2_NO_ERROR));
    c.socket.write(Buffer.concat(batch));
    sent += 100;
    await new Promise((r) => setImmediate(r));
  }
  await within('the attacker\'s connection to close', c.closed, 10_000);
  t.equal(await c.goaway, NGHTTP2_ENHANCE_YOUR_CALM, 'GOAWAY(ENHANCE_YOUR_CALM)');
  t.comment(`cut after ${sent} streams written`);
  const cut = (await g.gw.metrics.clientSessionsCut.get()).values.find((v) => v.labels.reason === 'rapid_reset');
  t.equal(cut?.value, 1, 'counted in ghostgate_client_sessions_cut_total{reason="rapid_reset"}');
  const atk = (await g.modelRequests()).filter((r) => r.id.startsWith('atk-'));
  t.ok(atk.length <= sent / 100, `the model saw ${atk.length} of the ${sent} attack streams`);
});
