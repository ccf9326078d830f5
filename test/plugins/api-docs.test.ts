/** docs/plugins.md documents exactly the plugin API module: every export, and nothing else. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import ts from 'typescript';

const root = path.resolve(import.meta.dirname, '../..');

/** Every name `core/plugin-api.ts` exports (values and types), read from its syntax tree. */
function exportsOf(file: string): string[] {
  const src = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest);
  const names: string[] = [];
  for (const st of src.statements) {
    if (ts.isExportDeclaration(st) && st.exportClause && ts.isNamedExports(st.exportClause)) {
      for (const el of st.exportClause.elements) names.push(el.name.text);
    } else if (ts.canHaveModifiers(st) && ts.getModifiers(st)?.some((m) => m.kind === ts.SyntaxKind.ExportKeyword)) {
      const name = (st as ts.DeclarationStatement).name;
      if (name && ts.isIdentifier(name)) names.push(name.text);
      if (ts.isVariableStatement(st)) for (const d of st.declarationList.declarations) if (ts.isIdentifier(d.name)) names.push(d.name.text);
    } else if (ts.isExportDeclaration(st)) {
      names.push('* (export *)');
    }
  }
  return names.sort();
}

/** The names in the first column of the table under "## The plugin API". */
function documented(md: string): string[] {
  const start = md.indexOf('\n## The plugin API (`ghostgate/plugin`)');
  const end = md.indexOf('\n## ', start + 1);
  const section = md.slice(start, end === -1 ? undefined : end);
  const names: string[] = [];
  for (const line of section.split('\n')) {
    const m = /^\| ((?:`[^`]+`(?:, )?)+) \|/.exec(line);
    if (m) for (const n of m[1]!.matchAll(/`([^`]+)`/g)) names.push(n[1]!);
  }
  return names.sort();
}

t.test('the plugin API reference lists exactly the exports of core/plugin-api.ts', async (t) => {
  const exported = exportsOf(path.join(root, 'core/plugin-api.ts'));
  t.ok(exported.length > 30, `the module exports ${exported.length} names`);
  t.same(documented(readFileSync(path.join(root, 'docs/plugins.md'), 'utf8')), exported);
});

t.test('the package exports the plugin API as ghostgate/plugin', async (t) => {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { name: string; exports: Record<string, string>; bin: Record<string, string> };
  t.equal(pkg.name, 'ghostgate');
  t.equal(pkg.exports['./plugin'], './core/plugin-api.ts');
  t.equal(pkg.bin.ghostgate, 'bin/ghostgate.ts');
  // Self-reference by package name resolves through `exports`, as it does for an installed package.
  const api = await import('ghostgate/plugin') as Record<string, unknown>;
  const direct = await import('../../core/plugin-api.ts') as Record<string, unknown>;
  t.equal(api.definePlugin, direct.definePlugin, 'the same module, not a copy');
});
