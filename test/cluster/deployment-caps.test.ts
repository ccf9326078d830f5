/**
 * A deployment's `maxConcurrent` is its capacity, whatever `--workers N` is: each worker takes
 * ceil(maxConcurrent / N), so the deployment never has more than its cap (+ N − 1 from rounding)
 * in flight. Before, every worker applied the whole cap: N times the capacity reached the model.
 * Real process tree (primary + 2 workers), real model server holding every request.
 */
import t from 'tap';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { collect, connect, open, waitFor } from '../helpers/h2.ts';
import type { ClientHttp2Session } from 'node:http2';

const CAP = 4; // two workers: 2 each

const g = await startGatewayProcess(t, {
  args: ['--workers', '2'],
  // The model holds each request 60 s before its first token: everything admitted stays in flight.
  modelArgs: ['--ttft-ms', '60000', '--token-ms', '1', '--tokens', '2'],
  upstreamsYaml: (m) => [
    'upstreams:', `  local: { url: ${m.url}, protocol: h2c, pool: { size: 2 } }`,
    'models:', '  ghost-small:', '    deployments:', `      - { upstream: local, maxConcurrent: ${CAP} }`,
  ].join('\n'),
  extraConfig: 'health: { minRequests: 1000 }\nshutdown: { graceMs: 500 }',
});

t.test('each worker takes its share of a deployment cap; the model never sees more than the cap', async (t) => {
  const ups = await (await fetch(`${g.adminUrl}/-/upstreams`)).json() as { workers: Array<{ upstreams: { local?: { deployments?: unknown } } & Record<string, unknown> }> };
  const caps = JSON.stringify(ups).match(/"cap":\d+/g) ?? [];
  t.same(caps, [`"cap":${CAP / 2}`, `"cap":${CAP / 2}`], `/-/upstreams: cap ${CAP / 2} in each worker`);

  // 16 requests, each on a connection of its own (the kernel spreads connections over the workers).
  const sessions: ClientHttp2Session[] = [];
  t.teardown(() => { for (const s of sessions) s.destroy(); });
  const statuses: Array<Promise<number>> = [];
  for (let i = 0; i < 16; i++) {
    const s = await connect(g.url);
    sessions.push(s);
    statuses.push(collect(open(s, '/v1/completions', { prompt: `p${i}`, stream: true })).then((r) => r.status, () => -1));
  }
  // The refused ones answer at once (503, no deployment available); the others wait at the model.
  const modelInFlight = async (): Promise<number> => ((await (await fetch(`${g.model.url}/_stats`)).json()) as { inFlight: number }).inFlight;
  let refused = 0;
  await waitFor('every request admitted or refused', async () => {
    refused = (await Promise.all(statuses.map((p) => Promise.race([p, Promise.resolve(0)])))).filter((s) => s === 503).length;
    return refused + await modelInFlight() === 16;
  }, 30_000);
  const inFlight = await modelInFlight();
  t.ok(inFlight <= CAP, `the model holds ${inFlight} requests, at most the cap ${CAP} (refused: ${refused})`);
  t.ok(inFlight >= 1, 'some were admitted');
});
