/**
 * Hot reload with real file edits: a valid edit under load fails nothing; an invalid edit keeps
 * the running config and says why; a removed upstream drains; unchanged pools stay warm.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, open, post, until } from '../helpers/h2.ts';
import type { Response } from '../helpers/h2.ts';

const policy = (v: string): string => `name: tag\nsteps:\n  - use: set-headers\n    params: { response: { x-policy-version: "${v}" } }\n`;

t.test('a valid policy edit under load: picked up from the file, zero failed requests', async (t) => {
  const g = await startGateway(t, { policies: { 'tag.yaml': policy('one') }, watch: true, modelArgs: ['--ttft-ms', '5', '--token-ms', '3', '--tokens', '10'] });
  const sessions = await Promise.all([connect(g.url), connect(g.url), connect(g.url)]);
  t.teardown(() => sessions.forEach((s) => s.close()));
  const opened = g.gw.runtime.upstreams.get('local')!.stats().sessionsOpened;
  t.equal(opened, 2, 'the pool opened its 2 sessions at start');
  // Three clients send back to back; each result records the config version when it was sent and
  // when it ended. Counts decide when to reload and when to stop, never a wall-clock window.
  const results: Array<Response & { sentOn: number; endedOn: number }> = [];
  let stop = false;
  const load = sessions.map(async (s) => {
    while (!stop) {
      const sentOn = g.gw.runtime.version;
      const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
      results.push({ ...r, sentOn, endedOn: g.gw.runtime.version });
    }
  });
  const servedBy = (v: string): number => results.filter((r) => r.headers['x-policy-version'] === v).length;
  await until(() => servedBy('one') >= 10);
  const v1 = g.gw.runtime.version;
  g.write('policies/tag.yaml', policy('two'));
  await until(() => g.gw.runtime.version > v1);
  await until(() => servedBy('two') >= 10);
  stop = true;
  await Promise.all(load);
  const failed = results.filter((r) => r.status !== 200 || r.events.at(-1) !== '[DONE]');
  const across = results.filter((r) => r.sentOn === v1 && r.endedOn > v1);
  t.ok(across.length >= 1, `${across.length} request(s) were in flight while the reload was applied (${results.length} in all)`);
  t.equal(failed.length, 0, 'zero failed or truncated requests');
  t.ok(servedBy('one') >= 10, 'served by the old config before');
  t.equal(results.at(-1)!.headers['x-policy-version'], 'two', 'and by the new one after');
  t.equal(g.gw.lastReload?.trigger, 'file change');
  t.equal(g.gw.runtime.upstreams.get('local')!.stats().sessionsOpened, opened, 'the unchanged upstream pool was kept warm (no new connections)');
});

t.test('an invalid edit keeps the last good config running and reports why (file:line)', async (t) => {
  const g = await startGateway(t, { policies: { 'tag.yaml': policy('good') } });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const v1 = g.gw.runtime.version;
  const cases: Array<[string, string, RegExp]> = [
    ['steps:\n  - use: set-headers\n    params: { response: [ }\n', 'GW_ERR_CONFIG_YAML', /tag\.yaml:\d+/],
    ['name: tag\nsteps:\n  - use: no-such-plugin\n', 'GW_ERR_CONFIG_UNKNOWN_PLUGIN', /tag\.yaml:3/],
    ['name: tag\nsteps:\n  - use: set-headers\n    params: { response: 42 }\n', 'GW_ERR_CONFIG_PLUGIN_PARAMS', /tag\.yaml:4/],
    ['name: tag\nsteps:\n  - use: set-headers\n    when: { "eval": ["1"] }\n', 'GW_ERR_CONFIG_CONDITION', /tag\.yaml:4/],
    ['name: tag\nsteps:\n  - use: set-headers\n    when: { "==": [{ "var": "process.env.HOME" }, 1] }\n', 'GW_ERR_CONFIG_CONDITION', /tag\.yaml:4/],
  ];
  for (const [text, code, where] of cases) {
    g.write('policies/tag.yaml', text);
    const res = await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' });
    t.equal(res.status, 400, `${code}: reload refused`);
    const body = await res.json() as { ok: boolean; version: number; errors: Array<{ code: string; file: string; line: number }>; error: { message: string } };
    t.equal(body.ok, false);
    t.equal(body.version, v1, 'still on the old version');
    t.equal(body.errors[0]!.code, code);
    t.match(`${body.errors[0]!.file}:${body.errors[0]!.line}`, where, `${code}: located`);
    t.equal(g.gw.runtime.version, v1);
    const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
    t.equal(r.headers['x-policy-version'], 'good', 'the old config keeps serving');
  }
  const cfg = await (await fetch(`${g.adminUrl}/-/config`)).json() as { version: number; lastReload: { ok: boolean; errors: unknown[] } };
  t.equal(cfg.version, v1);
  t.equal(cfg.lastReload.ok, false, '/-/config shows the rejected reload');
  t.ok(g.logs.some((l) => /config reload rejected/.test(l)), 'and it is logged');
  // Fix it: the reload goes through.
  g.write('policies/tag.yaml', policy('fixed'));
  const ok = await (await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' })).json() as { ok: boolean; version: number };
  t.equal(ok.ok, true);
  t.ok(ok.version > v1);
  const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  t.equal(r.headers['x-policy-version'], 'fixed');
});

t.test('a removed upstream: in-flight requests on it finish, new ones get a coded error', async (t) => {
  const two = (m: { url: string }): string => `upstreams:\n  local:\n    url: ${m.url}\n  second:\n    url: ${m.url}\n    forwardHeaders: [x-tokens]\nmodels:\n  ghost-small: { upstream: local }\n  ghost-big: { upstream: second }`;
  const g = await startGateway(t, { upstreamsYaml: two, modelArgs: ['--ttft-ms', '5', '--token-ms', '20', '--tokens', '5'] });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  // A 5 s stream (250 tokens, 20 ms apart): its first token is the sign it is in flight, and it
  // is still streaming when the reload lands, however slow the machine.
  let finished = false;
  const st = open(s, '/v1/completions', { model: 'ghost-big', prompt: 'x', stream: true }, { 'x-tokens': '250' });
  const inflight = collect(st).finally(() => { finished = true; });
  await new Promise((r) => st.once('data', r));
  const text = readFileSync(g.configFile, 'utf8')
    .replace(/  second:\n    url: .*\n/, '')
    .replace('  ghost-big: { upstream: second }', '');
  writeFileSync(g.configFile, text);
  const res = await (await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' })).json() as { ok: boolean };
  t.equal(res.ok, true, 'reload accepted');
  t.notOk(g.gw.runtime.upstreams.has('second'));
  t.notOk(finished, 'the request on the removed upstream was still streaming after the reload');
  const r = await inflight;
  t.equal(r.events.at(-1), '[DONE]', 'the in-flight request on the removed upstream finished');
  const gone = await post(s, '/v1/completions', { model: 'ghost-big', prompt: 'x' });
  t.equal(gone.status, 404);
  t.equal(JSON.parse(gone.text).error.code, 'GW_ERR_ROUTE_UNKNOWN_MODEL');
  const still = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  t.equal(still.events.at(-1), '[DONE]');
});

t.test('reload reports settings that need a restart, and applies the rest', async (t) => {
  const g = await startGateway(t, { policies: { 'tag.yaml': policy('a') } });
  writeFileSync(g.configFile, readFileSync(g.configFile, 'utf8') + 'limits: { bodyBytes: 2048 }\n');
  g.write('policies/tag.yaml', policy('b'));
  const res = await (await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' })).json() as { ok: boolean; restartRequired: string[] };
  t.equal(res.ok, true);
  t.same(res.restartRequired, ['limits']);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' });
  t.equal(r.headers['x-policy-version'], 'b');
  const same = await (await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' })).json() as { unchanged: boolean };
  t.equal(same.unchanged, true, 'a reload with nothing changed is a no-op');
});
