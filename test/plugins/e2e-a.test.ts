/**
 * End to end: a real gateway (HTTP/2 over loopback) running version-gate, strip-params,
 * set-params, logit-bias, model-rewrite and rate-limit against the bundled model server,
 * checking through its `GET /_requests` what the upstream actually received.
 */
import t from 'tap';
import type { RequestRecord } from '../../model-server/server.ts';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post } from '../helpers/h2.ts';

const POLICY = `
name: e2e-a
match: { paths: [/v1/completions] }
steps:
  - use: version-gate
    params: { minimum: "1.200.0", upgradeUrl: "https://example.com/upgrade" }
  - use: strip-params
    params: { remove: [/logprobs, /extra/poison_pill, /stop/0] }
  - use: set-params
    params: { set: { /max_tokens: 4 }, onlyIfAbsent: true }
  - use: logit-bias
    when: { "==": [{ var: route.model }, "ghost-small"] }
    params: { bias: { "50256": -100 } }
  - use: model-rewrite
    params: { map: { ghost: { upstream: local, model: ghost-small-canary } } }
  - use: rate-limit
    params: { key: request.headers.x-user, ratePerSecond: 0.01, burst: 2 }
`;

const current = { 'editor-version': 'vscode/1.95.0', 'editor-plugin-version': 'copilot/1.250.0' };

t.test('policy steps change what the upstream receives, and answer locally', async (t) => {
  const g = await startGateway(t, { extraConfig: 'facts: { headers: [x-user] }', policies: { 'e2e-a.yaml': POLICY } });
  const session = await connect(g.url);
  t.teardown(() => session.close());
  const received = async (id: string) => ((await g.modelRequests()) as unknown as RequestRecord[]).find((r) => r.id === id);

  const ok = await post(session, '/v1/completions', {
    model: 'ghost-small', prompt: 'def fib(', stream: true, logprobs: 3,
    extra: { poison_pill: true, keep: 1 }, stop: ['\n', '<END>'], logit_bias: { 50256: 10, 42: 1 },
  }, { ...current, 'x-user': 'u1', 'x-request-id': 'e2e-a-ok' });
  t.equal(ok.status, 200);
  t.ok(ok.complete, 'stream completed');
  const up = (await received('e2e-a-ok'))?.body as Record<string, unknown> | undefined;
  t.ok(up, 'the upstream got the request');
  t.equal(up?.logprobs, undefined, 'strip-params removed /logprobs');
  t.same(up?.extra, { keep: 1 }, 'strip-params removed a deep field');
  t.same(up?.stop, ['<END>'], 'strip-params removed an array entry');
  t.equal(up?.max_tokens, 4, 'set-params filled an absent field');
  t.same(up?.logit_bias, { 42: 1, 50256: -100 }, 'logit-bias merged, policy wins');
  t.equal(up?.model, 'ghost-small', 'unmapped model unchanged');

  const alias = await post(session, '/v1/completions', { model: 'ghost', prompt: 'x', stream: true, max_tokens: 2 },
    { ...current, 'x-user': 'u2', 'x-request-id': 'e2e-a-alias' });
  t.equal(alias.status, 200);
  t.equal(((await received('e2e-a-alias'))?.body as { model?: string })?.model, 'ghost-small-canary', 'model-rewrite: the deployment model name went upstream');

  const old = await post(session, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true },
    { 'editor-version': 'vscode/1.95.0', 'editor-plugin-version': 'copilot/1.199.0', 'x-user': 'u3', 'x-request-id': 'e2e-a-old' });
  t.equal(old.status, 426, 'version-gate: old extension gets 426');
  t.same(JSON.parse(old.text), {
    error: {
      code: 'GW_ERR_POLICY_UPGRADE_REQUIRED',
      message: 'This version of your editor extension is no longer supported. Please upgrade.',
      minimum_version: '1.200.0',
      upgrade_url: 'https://example.com/upgrade',
    },
  });
  t.equal(await received('e2e-a-old'), undefined, 'the old client never reached the upstream');

  const codes: number[] = [];
  let limited: Awaited<ReturnType<typeof post>> | undefined;
  for (let i = 0; i < 3; i++) {
    const r = await post(session, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true, max_tokens: 1 },
      { ...current, 'x-user': 'u4', 'x-request-id': `e2e-a-rl-${i}` });
    codes.push(r.status);
    limited = r;
  }
  t.same(codes, [200, 200, 429], 'rate-limit: burst of 2, then 429');
  t.equal((JSON.parse(limited!.text) as { error: { code: string } }).error.code, 'GW_ERR_POLICY_RATE_LIMITED');
  t.ok(Number(limited!.headers['retry-after']) >= 1, 'Retry-After in whole seconds');
});
