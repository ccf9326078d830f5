/**
 * No import cycles in core/: every module can be read, tested and moved on its own
 * (`scripts/import-cycles.ts`; `npx node scripts/import-cycles.ts` prints any it finds).
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { findCycles } from '../../scripts/import-cycles.ts';

t.test('core/ has no import cycle (type-only imports included)', async (t) => {
  const cycles = findCycles(path.join(import.meta.dirname, '../../core'));
  t.same(cycles.map((c) => c.join(' -> ')), [], 'no cycle; break one by giving the importer a narrow interface of its own');
});

t.test('the detector sees cycles through import, import type, export from and import()', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gg-cycles-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'sub'));
  const w = (f: string, s: string): void => writeFileSync(path.join(dir, f), s);
  w('a.ts', "import type { B } from './sub/b.ts';\nexport type A = B;\n");
  w('sub/b.ts', "export { c } from '../c.ts';\nexport type B = number;\n");
  w('c.ts', "export const c = async () => import('./a.ts');\n");
  // Not cycles: a comment quoting an import, and a module outside the folder.
  w('d.ts', "// import { x } from './e.ts'\nimport path from 'node:path';\nexport const d = path.sep;\n");
  w('e.ts', "import { d } from './d.ts';\nexport const e = d;\n");
  const cycles = findCycles(dir);
  t.equal(cycles.length, 1, 'one cycle');
  t.same(cycles[0], ['a.ts', 'sub/b.ts', 'c.ts', 'a.ts']);
});
