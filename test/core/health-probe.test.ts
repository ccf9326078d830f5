/**
 * health.probe: a gateway that voted itself out because its model fails gets no traffic from the
 * load balancer; it probes the default model and stays out while the model fails (before, it came
 * back once its failures aged out of the window and failed users again), and comes back in once
 * the model answers. Real gateway, real model server switched to failing with POST /_fail.
 */
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post, waitFor } from '../helpers/h2.ts';

const WINDOW_S = 2;
// Fewer probes in a window than minRequests (as with the defaults: 15 in 30 s, 20): judged by "any failure
// in the window", not by the rate.
const INTERVAL_MS = 500;

async function ping(adminUrl: string): Promise<number> { return (await fetch(`${adminUrl}/_ping`)).status; }

async function probes(adminUrl: string, result: 'ok' | 'fail'): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  return Number(text.match(new RegExp(`^ghostgate_health_probes_total\\{result="${result}"\\} (\\d+)`, 'm'))?.[1] ?? 0);
}

for (const probeOn of [true, false]) {
  t.test(probeOn ? 'probes keep a voted-out gateway out while its model fails, and let it back once it answers' : 'without probes (intervalMs 0) it comes back while its model still fails', async (t) => {
    const g = await startGateway(t, { extraConfig: `health: { slo: 0.9, windowSeconds: ${WINDOW_S}, minRequests: 5, probe: { intervalMs: ${probeOn ? INTERVAL_MS : 0}, timeoutMs: 2000 } }` });
    const s = await connect(g.url);
    t.teardown(() => s.close());
    const modelUrl = g.model!.url;
    t.equal(await ping(g.adminUrl), 200, 'healthy at start');
    t.equal(await probes(g.adminUrl, 'fail') + await probes(g.adminUrl, 'ok'), 0, 'no probe while healthy');

    await fetch(`${modelUrl}/_fail?status=503`, { method: 'POST' });
    for (let i = 0; i < 10; i++) await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' });
    t.equal(await ping(g.adminUrl), 503, 'voted out on the failed requests');

    if (probeOn) {
      // Enough failed probes that they span more than the window (setInterval never fires early):
      // the users' failures have aged out, and the probes' own failures keep it out.
      const need = (WINDOW_S * 1000) / INTERVAL_MS + 5;
      await waitFor(`${need} failed probes`, async () => (await probes(g.adminUrl, 'fail')) >= need, 30_000);
      t.equal(await ping(g.adminUrl), 503, 'still out: the model still fails');
      t.equal(await probes(g.adminUrl, 'ok'), 0, 'no probe succeeded');

      await fetch(`${modelUrl}/_fail?status=0`, { method: 'POST' });
      await waitFor('/_ping to pass again', async () => (await ping(g.adminUrl)) === 200, 30_000);
      t.ok(await probes(g.adminUrl, 'ok') >= 1, 'a probe succeeded');
      const before = await probes(g.adminUrl, 'ok') + await probes(g.adminUrl, 'fail');
      for (let i = 0; i < 5; i++) await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' });
      t.equal(await probes(g.adminUrl, 'ok') + await probes(g.adminUrl, 'fail'), before, 'no probes once back in');
    } else {
      await waitFor('/_ping to pass once the failures aged out', async () => (await ping(g.adminUrl)) === 200, 30_000);
      t.equal(await probes(g.adminUrl, 'fail'), 0, 'no probes sent');
      const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' });
      t.equal(r.status, 503, 'and the next user request fails: the flapping the probes prevent');
    }
  });
}
