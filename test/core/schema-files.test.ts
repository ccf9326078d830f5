/** The JSON Schemas editors use (docs/schema) are the ones the code validates with. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { schemaFiles } from '../../core/cli/schema.ts';

t.test('docs/schema is up to date (regenerate with: npx ghostgate schema)', async (t) => {
  for (const [name, text] of Object.entries(schemaFiles())) {
    t.equal(readFileSync(path.resolve(import.meta.dirname, '../../docs/schema', name), 'utf8'), text, name);
  }
  const policy = JSON.parse(schemaFiles()['policy.schema.json']!) as { properties: { steps: { items: { properties: { use: { enum: string[] } } } } } };
  t.ok(policy.properties.steps.items.properties.use.enum.includes('traffic-split'), 'every plugin is known to editors');
});
