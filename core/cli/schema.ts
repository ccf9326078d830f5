/**
 * `ghostgate schema`: the JSON Schemas editors use to validate and complete the YAML (via the
 * `# yaml-language-server: $schema=...` line at the top of each file). Generated from the same
 * schemas `validate` and reload use, with every plugin's params schema merged in.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { builtinPlugins } from '../../plugins/index.ts';
import { gatewayConfigSchema, policySchema } from '../config/schema.ts';
import { packageFile } from '../gateway.ts';
import type { PluginDefinition } from '../types.ts';

export function schemaFiles(): Record<string, string> {
  const plugins = builtinPlugins as ReadonlyArray<PluginDefinition<unknown>>;
  return {
    'gateway.config.schema.json': JSON.stringify(gatewayConfigSchema, null, 2) + '\n',
    'policy.schema.json': JSON.stringify(policySchema(plugins), null, 2) + '\n',
  };
}

export async function runSchemaCli(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { out: { type: 'string', default: packageFile('docs/schema') }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) { console.log('Usage: ghostgate schema [--out docs/schema]'); return 0; }
  mkdirSync(values.out!, { recursive: true });
  for (const [name, text] of Object.entries(schemaFiles())) {
    writeFileSync(path.join(values.out!, name), text);
    console.log(`wrote ${path.join(values.out!, name)}`);
  }
  return 0;
}
