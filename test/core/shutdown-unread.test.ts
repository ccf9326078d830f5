/**
 * Shutdown ends even when a client stopped reading: an HTTP/2 client that leaves a finished
 * response unread keeps its session (and TCP socket) open after the gateway destroys the session;
 * the grace deadline must still cut it, so `close()` resolves and the process can exit.
 */
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, open, post, waitFor, within } from '../helpers/h2.ts';

t.test('close() resolves while a client leaves a finished response unread', async (t) => {
  const g = await startGateway(t, { modelArgs: ['--ttft-ms', '5', '--token-ms', '1', '--tokens', '4'] });
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  for (let i = 0; i < 3; i++) await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  const before = (await g.modelStats()).completed;
  const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  st.on('error', () => { /* cut at shutdown: expected */ });
  // The gateway has relayed the whole response; the client never reads it.
  await waitFor('the unread response completed upstream', async () => (await g.modelStats()).completed > before);
  await waitFor('the gateway finished the request', () => g.gw.runtime.inflight === 0);
  s.close(); // graceful on the client side: it waits for the unread stream forever
  await within('gw.close() with a 300 ms grace', g.gw.close(300), 20_000);
  t.pass('close() resolved');
});
