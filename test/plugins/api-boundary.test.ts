/**
 * The plugin API boundary: a plugin imports only `core/plugin-api.ts` (or `ghostgate/plugin`),
 * Node built-ins, and files of its own folder. Every import specifier of every file under
 * plugins/ is read with TypeScript's own pre-processor (static, dynamic and re-exports alike).
 */
import { globSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import ts from 'typescript';

const root = path.resolve(import.meta.dirname, '../..');
const pluginsDir = path.join(root, 'plugins');
const API = path.join(root, 'core/plugin-api.ts');

/** The import specifiers of a TypeScript file that reach past the plugin API. */
function violations(file: string, text: string): string[] {
  const own = path.dirname(file) === pluginsDir ? pluginsDir : path.join(pluginsDir, path.relative(pluginsDir, file).split(path.sep)[0]!);
  const bad: string[] = [];
  for (const { fileName: spec } of ts.preProcessFile(text, true, true).importedFiles) {
    if (spec.startsWith('node:') || spec === 'ghostgate/plugin') continue;
    if (spec.startsWith('.')) {
      const target = path.resolve(path.dirname(file), spec);
      if (target === API) continue;
      // plugins/index.ts lists the plugin folders; a plugin's files stay inside its own folder.
      const inside = path.relative(own, target);
      if (!inside.startsWith('..') && !path.isAbsolute(inside)) continue;
    }
    bad.push(spec);
  }
  return bad;
}

t.test('plugins import only the plugin API, node: built-ins and their own folder', async (t) => {
  const files = globSync('**/*.ts', { cwd: pluginsDir }).map((f) => path.join(pluginsDir, f));
  t.ok(files.length >= 13, `found the plugin sources (${files.length})`);
  for (const file of files) {
    t.same(violations(file, readFileSync(file, 'utf8')), [],
      `${path.relative(root, file)}: import only from core/plugin-api.ts (ghostgate/plugin); add what a plugin needs there, not a core import`);
  }
});

t.test('the scan sees every kind of import that reaches past the API', async (t) => {
  const file = path.join(pluginsDir, 'x/index.ts');
  const src = [
    "import { definePlugin } from '../../core/plugin-api.ts';",
    "import type { Facts } from '../../core/types.ts';",
    "import { Counter } from 'prom-client';",
    "export { parsePointer } from '../../core/json-pointer.ts';",
    "const m = await import('../../core/exchange.ts');",
    "import other from '../y/index.ts';",
    "import { helper } from './helper.ts';",
    "import { performance } from 'node:perf_hooks';",
  ].join('\n');
  t.same(violations(file, src), ['../../core/types.ts', 'prom-client', '../../core/json-pointer.ts', '../../core/exchange.ts', '../y/index.ts']);
});
