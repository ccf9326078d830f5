/** The error catalog, the docs and the code agree (codes are API: clients match on them). */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { catalog, GatewayError } from '../../core/errors.ts';

const root = path.resolve(import.meta.dirname, '../..');
const doc = readFileSync(path.join(root, 'docs/errors.md'), 'utf8');

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) sources(full, out);
    else if (name.endsWith('.ts')) out.push(full);
  }
  return out;
}

t.test('every catalog code is documented with its status', async (t) => {
  for (const [code, def] of Object.entries(catalog)) {
    t.match(code, /^GW_ERR_[A-Z]+_[A-Z_]+$/, `${code} follows GW_ERR_<AREA>_<PROBLEM>`);
    t.match(doc, new RegExp(`\\| \`${code}\` \\| ${def.status} \\|`), `${code} documented with status ${def.status}`);
  }
});

t.test('every code the code uses is in the catalog', async (t) => {
  const used = new Set<string>();
  for (const f of [...sources(path.join(root, 'core')), ...sources(path.join(root, 'plugins'))]) {
    for (const m of readFileSync(f, 'utf8').matchAll(/GW_ERR_[A-Z]+_[A-Z_]*[A-Z](?![A-Z_])/g)) used.add(m[0]);
  }
  for (const code of used) t.ok(code in catalog, `${code} is in the catalog`);
});

t.test('errors serialize to {error: {code, message}}', async (t) => {
  const e = new GatewayError('GW_ERR_UPSTREAM_TIMEOUT', ['local', 100]);
  t.same(e.toJSON(), { error: { code: 'GW_ERR_UPSTREAM_TIMEOUT', message: 'Upstream "local" sent no response within 100 ms' } });
  t.equal(e.status, 504);
});
