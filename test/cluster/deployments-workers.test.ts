/**
 * Deployments with `--workers 2`: each worker keeps its own deployment state, so a cap applies
 * per worker, `/-/upstreams` lists each worker's deployments, and `/metrics` sums the workers.
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
  for (const w of u.workers) t.match(w.upstreams.local.deployments, [{ logicalModel: 'ghost-small', cap: 3, state: 'healthy' }], 'each worker has its own deployment state');
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  t.match(text, /^ghostgate_deployment_capacity\{model="ghost-small",deployment="local"\} 6$/m, 'capacity summed over the 2 workers: 2 x 3');
});
