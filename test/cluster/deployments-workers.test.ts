/**
 * Deployments with `--workers 2`: each worker keeps its own deployment state and takes its share
 * of the cap (ceil(3 / 2) = 2), `/-/upstreams` lists each worker's deployments, and `/metrics`
 * sums the workers. (That the model never holds more than the cap: deployment-caps.test.ts.)
 */
import t from 'tap';
import { startGatewayProcess } from '../helpers/gateway-process.ts';

const g = await startGatewayProcess(t, {
  args: ['--workers', '2'],
  upstreamsYaml: (m) => [
    'upstreams:',
    `  local: { url: ${m.url}, protocol: h2c, pool: { size: 2 } }`,
    'models:',
    '  ghost-small:',
    '    deployments: [{ upstream: local, maxConcurrent: 3 }]',
  ].join('\n'),
});

t.test('/-/upstreams shows each worker\'s deployment; /metrics sums their caps', async (t) => {
  const u = (await (await fetch(`${g.adminUrl}/-/upstreams`)).json()) as { workers: Array<{ upstreams: { local: { deployments: Array<{ logicalModel: string; cap: number; state: string }> } } }> };
  t.equal(u.workers.length, 2);
  for (const w of u.workers) t.match(w.upstreams.local.deployments, [{ logicalModel: 'ghost-small', cap: 2, state: 'healthy' }], 'each worker has its own deployment state, with its share of the cap');
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  t.match(text, /^ghostgate_deployment_capacity\{model="ghost-small",deployment="local"\} 4$/m, 'capacity summed over the 2 workers: 2 x ceil(3 / 2)');
});
