/**
 * package.json says what the gateway uses: every package the shipped code imports is declared in
 * `dependencies` (not reached through another package's hoisting), and every declared runtime
 * dependency is imported by shipped code (a dependency only tests use is a devDependency).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import t from 'tap';
import { createLogger } from '../../core/logger.ts';

const root = path.join(import.meta.dirname, '../..');
/** The code `npm start` and the published package run. */
const SHIPPED = ['core', 'plugins', 'bin', 'model-server', 'client'];
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = path.join(dir, e);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Package names imported (statically or dynamically) by one file; comments ignored. */
function packagesOf(file: string): string[] {
  const src = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
  const out: string[] = [];
  for (const m of src.matchAll(/(?:^|[\s;])(?:import|export)\s(?:[^'"]*?\sfrom\s)?['"]([^'"./][^'"]*)['"]|import\(\s*['"]([^'"./][^'"]*)['"]\s*\)/g)) {
    const spec = m[1] ?? m[2]!;
    if (spec.startsWith('node:') || builtinModules.includes(spec)) continue;
    out.push(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
  }
  return out;
}

const used = new Map<string, string>();
for (const d of SHIPPED) for (const f of tsFiles(path.join(root, d))) for (const p of packagesOf(f)) if (!used.has(p)) used.set(p, path.relative(root, f));

t.test('every package the shipped code imports is a declared dependency', async (t) => {
  t.ok(used.size > 5, `found the imports (${[...used.keys()].join(', ')})`);
  for (const [p, file] of used) t.ok(pkg.dependencies[p], `${p} (imported by ${file}) is in dependencies`);
});

t.test('every runtime dependency is imported by the shipped code', async (t) => {
  for (const p of Object.keys(pkg.dependencies)) t.ok(used.has(p), `${p} is imported somewhere under ${SHIPPED.join('/, ')}/ (else remove it, or make it a devDependency)`);
});

t.test('the logger writes JSON lines and hides credentials', async (t) => {
  const lines: string[] = [];
  const log = createLogger({ level: 'info', stream: { write: (s: string) => { lines.push(s); return true; } } as unknown as NodeJS.WritableStream });
  log.debug('not at info');
  log.info({ headers: { authorization: 'Bearer s3cret' }, token: 'tok', upstream: { key: 'k' } }, 'hello');
  t.equal(lines.length, 1, 'one line at info, debug filtered');
  const o = JSON.parse(lines[0]!) as Record<string, unknown>;
  t.equal(o.msg, 'hello');
  t.equal(o.level, 30);
  t.same(o.headers, { authorization: '[redacted]' });
  t.equal(o.token, '[redacted]');
  t.same(o.upstream, { key: '[redacted]' });
  t.notMatch(lines[0]!, /s3cret|tok"|"k"/, 'no secret in the output');
});
