/**
 * Issue #8's rule for the core: no file in `core/` over ~250 lines without a reason written at its
 * top. A file that grows past 250 lines fails here until its header comment says why it is one
 * file ("over 250 lines ...") or it is split.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';

const ROOT = path.resolve(import.meta.dirname, '../..');
const LIMIT = 250;

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? tsFiles(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** The leading block comment of a file (its header), or ''. */
function header(text: string): string {
  const m = /^\s*\/\*\*?[^]*?\*\//.exec(text);
  return m === null ? '' : m[0];
}

t.test('the header check reads only the leading comment', async (t) => {
  t.match(header('/**\n * A.\n *\n * Over 250 lines on purpose: x.\n */\nconst a = 1;'), /over 250 lines/i);
  t.notMatch(header('const a = 1;\n/** over 250 lines */'), /over 250 lines/i, 'a comment further down is not the header');
});

t.test(`every file in core/ over ${LIMIT} lines says at its top why`, async (t) => {
  const files = tsFiles(path.join(ROOT, 'core'));
  t.ok(files.length > 20, `found the core's files (${files.length})`);
  for (const f of files) {
    const text = readFileSync(f, 'utf8');
    const lines = text.split('\n').length;
    if (lines <= LIMIT) continue;
    t.match(header(text), /over 250 lines/i, `${path.relative(ROOT, f)} has ${lines} lines: split it, or say at its top why it is one file ("over 250 lines …")`);
  }
});
