/**
 * What a gateway shows for a plugin's failing `request` phases: each logged naming the plugin
 * and why, with its reason, counted in `ghostgate_plugin_failures_total`, and no request left in
 * flight after them.
 */
import type { Test } from 'tap';
import type { TestGateway } from './gateway.ts';

export async function assertStepFailures(t: Test, g: TestGateway, plugin: string, reason: string, why: ReadonlyArray<readonly [string, RegExp]>, count: number, phase = 'request'): Promise<void> {
  const logs = g.logs.map((l) => JSON.parse(l) as Record<string, string>).filter((l) => l.plugin === plugin);
  for (const [mode, re] of why) {
    t.ok(logs.some((l) => l.phase === phase && l.reason === reason && re.test(l.err!) && l.msg!.includes(`plugin "${plugin}"`)), `${mode}: logged naming the plugin and the header`);
  }
  const m = await (await fetch(`${g.adminUrl}/metrics`)).text();
  t.match(m, new RegExp(`ghostgate_plugin_failures_total\\{plugin="${plugin}",phase="${phase}",reason="${reason}"\\} ${count}\\n`), `counted (${phase})`);
  t.match(m, /ghostgate_inflight_requests 0\n/, 'nothing left in flight');
}
