/**
 * docs/plugins.md's "Testing" examples, run as written: the two tap tests of that section (a
 * step on its own, and end to end in a real gateway) are taken from the page, with the
 * header-gate plugin of its "Example: header-gate" section, put in a folder outside the
 * repository (their relative imports pointed back at this checkout), and run in a child process.
 * Editing the page so that its examples no longer run fails this test.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { docBlocks } from '../helpers/docs.ts';
import { NODE_BIN, ROOT, spawnTracked, stopTracked } from '../helpers/proc.ts';

const url = (rel: string): string => pathToFileURL(path.join(ROOT, rel)).href;

t.test('the Testing section of docs/plugins.md runs and passes', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-docs-'));
  const plugin = docBlocks('docs/plugins.md', 'ts', '### Example: header-gate', '### Registering')[0]!;
  const tests = docBlocks('docs/plugins.md', 'ts', '### Testing', '## The plugin API');
  t.equal(tests.length, 2, 'two examples: a step on its own, end to end');
  mkdirSync(path.join(dir, 'header-gate'));
  const pluginFile = path.join(dir, 'header-gate/index.ts');
  writeFileSync(pluginFile, plugin.replaceAll("'../../core/plugin-api.ts'", `'${url('core/plugin-api.ts')}'`));
  const testFile = path.join(dir, 'example.test.ts');
  writeFileSync(testFile, tests.join('\n')
    .replaceAll("'../../plugins/header-gate/index.ts'", `'${pathToFileURL(pluginFile).href}'`)
    .replaceAll("from 'tap'", `from '${import.meta.resolve('tap')}'`)
    .replaceAll(/'\.\.\/helpers\/([\w.-]+)'/g, (_m, f: string) => `'${url(`test/helpers/${f}`)}'`)
    .replaceAll(/'\.\.\/\.\.\/core\/([\w.-]+)'/g, (_m, f: string) => `'${url(`core/${f}`)}'`));

  const child = spawnTracked(NODE_BIN, [testFile], { cwd: dir });
  t.teardown(() => stopTracked(child));
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  t.equal(code, 0, out);
  t.match(out, /^ok 1 - rejects a request without the header; passes an allowed value/m);
  t.match(out, /^ok 2 - bad params are refused at load/m);
  t.match(out, /^ok 3 - end to end: a real gateway with the plugin registered/m);
});
