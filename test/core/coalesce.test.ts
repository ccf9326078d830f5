/** Reload coalescing (core/coalesce.ts): one run at a time, and calls during a run make one more run. */
import t from 'tap';
import { Coalesced } from '../../core/coalesce.ts';

t.test('calls during a run share it and make exactly one more run, with the latest trigger', async (t) => {
  const runs: string[] = [];
  const releases: Array<() => void> = [];
  const c: Coalesced<string> = new Coalesced<string>(
    (trigger) => new Promise<string>((resolve) => { runs.push(trigger); releases.push(() => resolve(trigger)); }),
    (trigger) => void c.call(trigger),
  );
  const a = c.call('file');
  const b = c.call('sighup');
  const d = c.call('api');
  t.equal(b, a, 'a call during a run gets the running promise');
  t.equal(d, a);
  t.same(runs, ['file'], 'one run at a time');
  releases[0]!();
  t.equal(await a, 'file');
  await new Promise((r) => setImmediate(r));
  t.same(runs, ['file', 'api'], 'one more run after it, with the latest trigger');
  t.ok(c.running, 'the rerun is the running one');
  releases[1]!();
  await c.running;
  await new Promise((r) => setImmediate(r));
  t.same(runs, ['file', 'api'], 'no run without a call');
  t.equal(c.running, undefined);
});

t.test('a failed run still lets the next call run', async (t) => {
  let n = 0;
  const c = new Coalesced<void>(async () => { n++; if (n === 1) throw new Error('bad'); }, () => undefined);
  await t.rejects(c.call('x'), /bad/);
  await c.call('y');
  t.equal(n, 2);
});
