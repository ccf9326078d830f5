import t from 'tap';
import versionGate from '../../plugins/version-gate/index.ts';
import { loadStep } from '../helpers/plugin-step.ts';
import { makeExchange } from '../helpers/exchange.ts';
import type { Facts, LocalReply, Step } from '../../core/types.ts';

const copilot = (version: string | undefined, editor = 'vscode', editorVersion: string | undefined = '1.95.0'): Partial<Facts['client']> =>
  ({ editor, editorVersion, plugin: version === undefined ? undefined : 'copilot', version });

async function gate(step: Step, client: Partial<Facts['client']>, headers?: Record<string, string>) {
  return (await step.request!(makeExchange({ client, ...(headers ? { headers } : {}) }))) as LocalReply | undefined;
}

t.test('one minimum for the extension version', async (t) => {
  const { step } = await loadStep(versionGate, { minimum: '1.200.0', upgradeUrl: 'https://example.com/upgrade' });
  const reply = await gate(step, copilot('1.199.9'));
  t.same(reply, {
    status: 426,
    body: { error: { code: 'GW_ERR_POLICY_UPGRADE_REQUIRED', message: 'This version of your editor extension is no longer supported. Please upgrade.', minimum_version: '1.200.0', upgrade_url: 'https://example.com/upgrade' } },
  }, 'below: 426 with the upgrade body');
  t.equal(await gate(step, copilot('1.200.0')), undefined, 'equal passes');
  t.equal(await gate(step, copilot('1.250.3')), undefined, 'above passes');
  t.equal(await gate(step, copilot('2.0.0')), undefined, 'major above passes');
  t.equal((await gate(step, copilot('1.200.0-beta.2')))?.status, 426, 'a prerelease of the minimum is below it');
  t.equal(await gate(step, copilot('1.200.1-beta.2')), undefined, 'a prerelease above the minimum passes');
  t.equal(await gate(step, copilot('v1.201')), undefined, 'v prefix and short versions parse');
});

t.test('missing or unparseable versions follow onMissing', async (t) => {
  const allow = (await loadStep(versionGate, { minimum: '1.200.0' })).step;
  const reject = (await loadStep(versionGate, { minimum: '1.200.0', onMissing: 'reject', status: 400, message: 'Upgrade!' })).step;
  for (const c of [copilot(undefined), { plugin: 'copilot', version: 'nightly' }, { plugin: 'copilot', version: '1.x' }]) {
    t.equal(await gate(allow, c), undefined, `allow: ${JSON.stringify(c)}`);
    t.same(await gate(reject, c), { status: 400, body: { error: { code: 'GW_ERR_POLICY_UPGRADE_REQUIRED', message: 'Upgrade!', minimum_version: '1.200.0' } } },
      `reject: ${JSON.stringify(c)}`);
  }
});

t.test('minimum per extension or editor name', async (t) => {
  const { step } = await loadStep(versionGate, { minimum: { copilot: '1.200.0', vscode: '1.90.0', 'JetBrains-IC': '2024.1' } });
  t.equal(await gate(step, copilot('1.250.0', 'vscode', '1.95.0')), undefined, 'both above');
  const old = await gate(step, copilot('1.250.0', 'vscode', '1.89.1'));
  t.equal(old?.status, 426);
  t.equal((old?.body.error as { minimum_version: string }).minimum_version, '1.90.0', 'names the editor minimum that failed');
  const oldExt = await gate(step, copilot('1.100.0', 'vscode', '1.95.0'));
  t.equal(oldExt?.status, 426, 'extension below');
  t.equal((oldExt?.body.error as { minimum_version: string }).minimum_version, '1.200.0', 'names the extension minimum');
  // The core lower-cases the names it parses from the headers; config names match regardless of case.
  t.equal(await gate(step, copilot('1.250.0', 'jetbrains-ic', '2024.2.1')), undefined);
  t.equal((await gate(step, copilot('1.250.0', 'jetbrains-ic', '2023.3')))?.status, 426, 'config name "JetBrains-IC" matches "jetbrains-ic"');
  t.equal(await gate(step, { editor: 'neovim', editorVersion: '0.1.0', plugin: 'copilot.vim', version: '0.1.0' }), undefined, 'names without a minimum pass');
  t.equal(await gate(step, {}), undefined, 'no identity, onMissing allow');
  const strict = (await loadStep(versionGate, { minimum: { copilot: '1.200.0' }, onMissing: 'reject' })).step;
  t.same(await gate(strict, {}), { status: 426, body: { error: { code: 'GW_ERR_POLICY_UPGRADE_REQUIRED', message: 'This version of your editor extension is no longer supported. Please upgrade.' } } },
    'no identity, onMissing reject: no minimum_version to name');
  t.equal((await gate(strict, copilot('garbage')))?.status, 426, 'unparseable, onMissing reject');
});

t.test('allowEditors: other editors get 403', async (t) => {
  const { step } = await loadStep(versionGate, { minimum: '1.0.0', allowEditors: ['vscode', 'JetBrains-IC'] });
  t.equal(await gate(step, copilot('1.0.0', 'vscode')), undefined);
  t.equal(await gate(step, copilot('1.0.0', 'jetbrains-ic')), undefined, 'case-insensitive');
  t.same(await gate(step, copilot('1.0.0', 'emacs')), {
    status: 403,
    body: { error: { code: 'GW_ERR_POLICY_REJECTED', message: 'Request rejected by policy: this editor is not supported', allowed_editors: ['vscode', 'jetbrains-ic'] } },
  });
  t.equal(await gate(step, { plugin: 'copilot', version: '1.0.0' }), undefined, 'editor missing, onMissing allow');
  const strict = (await loadStep(versionGate, { minimum: '1.0.0', allowEditors: ['vscode'], onMissing: 'reject' })).step;
  t.equal((await gate(strict, { plugin: 'copilot', version: '1.0.0' }))?.status, 403, 'editor missing, onMissing reject');
});

t.test('versions read from other headers', async (t) => {
  const { step } = await loadStep(versionGate, { minimum: { 'my-ext': '2.0.0', vscode: '1.90.0' }, headers: { plugin: 'x-ext-version' } });
  t.equal((await gate(step, copilot('9.9.9'), { 'x-ext-version': 'my-ext/1.9.0' }))?.status, 426, 'header version below');
  t.equal((await gate(step, copilot('9.9.9'), { 'x-ext-version': 'My-Ext/1.9.0' }))?.status, 426, 'header name matched case-insensitively');
  t.equal(await gate(step, copilot('0.0.1'), { 'x-ext-version': 'my-ext/2.0.0' }), undefined, 'header wins over the client facts');
  t.equal((await gate(step, copilot('9.9.9', 'vscode', '1.0.0'), { 'x-ext-version': 'my-ext/2.0.0' }))?.status, 426,
    'editor still read from the client facts');
  t.equal(await gate(step, copilot(undefined), { 'x-ext-version': 'garbage' }), undefined, 'malformed header is missing');
  const single = (await loadStep(versionGate, { minimum: '2.0.0', headers: { plugin: 'x-ext-version' } })).step;
  t.equal((await gate(single, {}, { 'x-ext-version': '1.0.0' }))?.status, 426, 'a bare version in the header');
});

t.test('reply objects are built once and frozen', async (t) => {
  const { step } = await loadStep(versionGate, { minimum: '1.200.0' });
  const a = await gate(step, copilot('1.0.0'));
  const b = await gate(step, copilot('1.1.0'));
  t.equal(a, b);
  t.ok(Object.isFrozen(a) && Object.isFrozen(a!.body.error));
});

t.test('bad params are refused at load with GW_ERR_CONFIG_PLUGIN_PARAMS', async (t) => {
  const bad: unknown[] = [
    {},
    { minimum: '' },
    { minimum: 'latest' },
    { minimum: '1.2.3.4' },
    { minimum: {} },
    { minimum: { copilot: 'one' } },
    { minimum: '1.0.0', status: 200 },
    { minimum: '1.0.0', status: '426' },
    { minimum: '1.0.0', onMissing: 'deny' },
    { minimum: '1.0.0', upgradeUrl: 'javascript:alert(1)' },
    { minimum: '1.0.0', allowEditors: [] },
    { minimum: '1.0.0', headers: { plugin: 'X-Ext' } },
    { minimum: '1.0.0', headers: { other: 'x' } },
    { minimum: '1.0.0', extra: 1 },
    { minimum: { copilot: '1.0.0', Copilot: '2.0.0' } },
  ];
  for (const params of bad) {
    await t.rejects(loadStep(versionGate, params), { code: 'GW_ERR_CONFIG_PLUGIN_PARAMS' }, JSON.stringify(params));
  }
  await t.rejects(loadStep(versionGate, { minimum: { copilot: '1.0', vscode: 'x' } }),
    { code: 'GW_ERR_CONFIG_PLUGIN_PARAMS', location: { path: 'params.minimum.vscode' } }, 'names the bad minimum');
});
