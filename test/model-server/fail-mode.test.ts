/**
 * The model server's failing modes for failover tests: `--fail-status N [--retry-after S]`
 * answers every model request with N (no token), and `POST /_fail?status=N&retryAfter=S` turns it
 * on and off at run time. Both protocols.
 */
import t from 'tap';
import { connect, post, post1 } from '../helpers/h2.ts';
import { spawnModelServer } from './fixtures/spawn.ts';

const BODY = { model: 'm', prompt: 'x', stream: true };

t.test('--fail-status 429 --retry-after 7: every model request, on h2 and HTTP/1.1', async (t) => {
  const ms = await spawnModelServer(['--fail-status', '429', '--retry-after', '7', '--ttft-ms', '1', '--token-ms', '0']);
  t.teardown(() => ms.stop());
  const s = await connect(ms.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', BODY);
  t.equal(r.status, 429);
  t.equal(r.headers['retry-after'], '7');
  t.match(JSON.parse(r.text), { error: { type: 'rate_limit_error' } });
  const r1 = await post1(`${ms.url}/v1/completions`, BODY);
  t.equal(r1.status, 429);
  t.equal(r1.headers['retry-after'], '7');
});

t.test('POST /_fail turns failing on and off at run time; bad values are refused', async (t) => {
  const ms = await spawnModelServer(['--ttft-ms', '1', '--token-ms', '0', '--tokens', '2']);
  t.teardown(() => ms.stop());
  const s = await connect(ms.url);
  t.teardown(() => s.close());
  t.equal((await post(s, '/v1/completions', BODY)).status, 200);
  const on = await fetch(`${ms.url}/_fail?status=503`, { method: 'POST' });
  t.equal(on.status, 200);
  const r = await post(s, '/v1/completions', BODY);
  t.equal(r.status, 503);
  t.equal(r.headers['retry-after'], undefined, 'no Retry-After unless asked');
  t.equal((await fetch(`${ms.url}/_fail?status=200`, { method: 'POST' })).status, 400, 'status 200 is not a failure');
  await fetch(`${ms.url}/_fail?status=0`, { method: 'POST' });
  const ok = await post(s, '/v1/completions', BODY);
  t.equal(ok.status, 200);
  t.equal(ok.events.at(-1), '[DONE]');
});
