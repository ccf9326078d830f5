/** Config of models with deployments: defaults, references checked with their location, one form only. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { loadConfig } from '../../core/config/load.ts';
import { ConfigErrors } from '../../core/errors.ts';

function file(text: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-dep-'));
  writeFileSync(path.join(dir, 'g.yaml'), text);
  return path.join(dir, 'g.yaml');
}
const UPSTREAMS = 'upstreams:\n  a: { url: "http://127.0.0.1:8001" }\n  b: { url: "http://127.0.0.1:8002" }\n';
const errorsOf = (text: string): Array<{ code: string; message: string; location?: { line?: number } }> => {
  try { loadConfig(file(text), {}); } catch (e) { if (e instanceof ConfigErrors) return e.errors as never; throw e; }
  return [];
};

t.test('deployments: defaults applied, model name defaulted, route upstream = the preferred deployment', async (t) => {
  const c = loadConfig(file(UPSTREAMS + `models:
  code:
    upstreamModel: code-v2
    deployments:
      - { upstream: a, priority: 1, maxConcurrent: 8 }
      - { upstream: b, model: code-v2-eu, region: eu, weight: 3 }
`), {}).config;
  const m = c.models.code!;
  t.same(m.deployments, [
    { upstream: 'a', model: 'code-v2', region: '', weight: 1, priority: 1, maxConcurrent: 8 },
    { upstream: 'b', model: 'code-v2-eu', region: 'eu', weight: 3, priority: 0, maxConcurrent: 0 },
  ]);
  t.equal(m.upstream, 'b', 'priority 0 is preferred');
  t.same(m.failover, { attempts: 3, budgetMs: 30_000, ejection: { consecutiveFailures: 5, errorRate: 0.5, minRequests: 20, windowMs: 10_000, baseMs: 5_000, maxMs: 60_000 } });
});

t.test('the single-upstream form is unchanged', async (t) => {
  const c = loadConfig(file(UPSTREAMS + 'models:\n  m: { upstream: a }\n'), {}).config;
  t.equal(c.models.m!.upstream, 'a');
  t.equal(c.models.m!.deployments, undefined);
});

t.test('bad deployments are config errors with their location', async (t) => {
  const unknown = errorsOf(UPSTREAMS + 'models:\n  m:\n    deployments:\n      - { upstream: a }\n      - { upstream: nope }\n');
  t.match(unknown, [{ code: 'GW_ERR_CONFIG_UNKNOWN_UPSTREAM', location: { line: 8, path: 'models.m.deployments.1.upstream' } }]);
  const both = errorsOf(UPSTREAMS + 'models:\n  m:\n    upstream: a\n    deployments: [{ upstream: b }]\n');
  t.match(both, [{ code: 'GW_ERR_CONFIG_INVALID', message: /either upstream or deployments/ }]);
  const neither = errorsOf(UPSTREAMS + 'models:\n  m: { aliases: [x] }\n');
  t.match(neither, [{ code: 'GW_ERR_CONFIG_INVALID', message: /either upstream or deployments/ }]);
  const twice = errorsOf(UPSTREAMS + 'models:\n  m:\n    deployments: [{ upstream: a }, { upstream: a }]\n');
  t.match(twice, [{ code: 'GW_ERR_CONFIG_INVALID', message: /listed twice/ }]);
  const weight = errorsOf(UPSTREAMS + 'models:\n  m:\n    deployments: [{ upstream: a, weight: 0 }]\n');
  t.equal(weight.length, 1, 'weight 0 is refused by the schema');
  const backoff = errorsOf(UPSTREAMS + 'models:\n  m:\n    deployments: [{ upstream: a }]\n    failover: { ejection: { baseMs: 10000, maxMs: 5000 } }\n');
  t.match(backoff, [{ message: /maxMs must be at least baseMs/ }]);
});
