/**
 * The fuzz run of bench/fuzz.ts with a fixed seed, bounded to a few seconds: a real gateway
 * process and the real model server; requests over HTTP/2 and HTTP/1.1 with mutated bodies and
 * headers; mutated policy files written to the watched folder and reloaded. `npm run fuzz` runs
 * the same thing longer, with any seed. Any problem fails it (its text names the case).
 */
import t from 'tap';
import { runFuzz } from '../../bench/fuzz.ts';

const SEED = 20261202;

t.test('fuzz: no crash, no hang, only catalogued errors, last good config kept', async (t) => {
  const r = await runFuzz({ seed: SEED, count: 250, policies: 6, concurrency: 8 });
  t.comment(`seed ${r.seed}: ${r.requests.h2} HTTP/2 + ${r.requests.h1} HTTP/1.1 requests, reloads ${r.reloads.ok} accepted / ${r.reloads.rejected} rejected, ${r.seconds.toFixed(1)} s`);
  t.comment(`answers h2 ${JSON.stringify(r.outcomes.h2)}; h1 ${JSON.stringify(r.outcomes.h1)}`);
  // The run reached what it means to test: well-formed completions, refused ones, both kinds of reload.
  t.ok(r.requests.h2 >= 200 && r.requests.h1 >= 240, 'both protocols were exercised');
  t.ok((r.outcomes.h2['200'] ?? 0) > 20 && (r.outcomes.h1['200'] ?? 0) > 20, 'some cases were valid completions (200)');
  t.ok((r.outcomes.h2['400'] ?? 0) > 20 && (r.outcomes.h1['400'] ?? 0) > 20, 'many were refused (400)');
  t.ok(r.reloads.ok >= 1 && r.reloads.rejected >= 1, 'mutated policies were both accepted and rejected');

  t.same(r.problems.map((p) => `${p.protocol} ${p.case}: ${p.problem}`), [], 'no problem: the gateway stayed up, answered everything in time, with coded errors, complete 200s, and kept its last good config');
});
