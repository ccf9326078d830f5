/**
 * Import cycles among the TypeScript files under a folder (default `core/`): a depth-first walk
 * over the relative specifiers of `import … from`, `export … from` and `import('…')`, type-only
 * imports included (a type cycle still ties two modules together: neither can move alone).
 *
 *   npx node scripts/import-cycles.ts [dir]    # prints each cycle, exit 1 if any
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

const SPEC = /(?:^|[\s;])(?:import|export)\s(?:[^'"]*?\sfrom\s)?['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;

function files(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = path.join(dir, e);
    if (statSync(p).isDirectory()) out.push(...files(p));
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Relative imports of one file, resolved to absolute paths, kept only when inside `root`. */
export function importsOf(file: string, root: string): string[] {
  // Comments can quote import lines; drop them before matching.
  const src = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
  const out = new Set<string>();
  for (const m of src.matchAll(SPEC)) {
    const target = path.resolve(path.dirname(file), m[1] ?? m[2]!);
    if (target.startsWith(root + path.sep)) out.add(target);
  }
  return [...out];
}

/** Every elementary cycle found by the DFS (one per back edge), as lists of paths relative to `root`. */
export function findCycles(root: string): string[][] {
  const abs = path.resolve(root);
  const graph = new Map<string, string[]>();
  for (const f of files(abs)) graph.set(f, importsOf(f, abs));
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const cycles: string[][] = [];
  const visit = (f: string): void => {
    state.set(f, 'open');
    stack.push(f);
    for (const g of graph.get(f) ?? []) {
      if (!graph.has(g)) continue;
      const s = state.get(g);
      if (s === 'open') cycles.push([...stack.slice(stack.indexOf(g)), g].map((p) => path.relative(abs, p)));
      else if (s === undefined) visit(g);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of [...graph.keys()].sort()) if (!state.has(f)) visit(f);
  return cycles;
}

if (import.meta.main) {
  const dir = process.argv[2] ?? path.join(import.meta.dirname, '..', 'core');
  const cycles = findCycles(dir);
  for (const c of cycles) console.log(c.join(' -> '));
  console.log(`${cycles.length} import cycle(s) under ${dir}`);
  process.exitCode = cycles.length ? 1 : 0;
}
