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
import { pluginsOfConfig } from '../plugin-loader.ts';
import { packageFile } from '../gateway.ts';
import type { PluginDefinition } from '../types.ts';

/** The schema files' text; `plugins` default to the built-ins (docs/schema is generated with those). */
export function schemaFiles(plugins = builtinPlugins as ReadonlyArray<PluginDefinition<unknown>>): Record<string, string> {
  return {
    'gateway.config.schema.json': JSON.stringify(gatewayConfigSchema, null, 2) + '\n',
    'policy.schema.json': JSON.stringify(policySchema(plugins), null, 2) + '\n',
  };
}

export async function runSchemaCli(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { out: { type: 'string', default: packageFile('docs/schema') }, config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) { console.log('Usage: ghostgate schema [--out docs/schema] [--config gateway.config.yaml]\nWith --config, the policy schema also knows the plugins the config\'s plugins: list names.'); return 0; }
  // Built-ins only unless a config is named: docs/schema describes this repository's plugins.
  const plugins = values.config ? await pluginsOfConfig(values.config) : undefined;
  mkdirSync(values.out!, { recursive: true });
  for (const [name, text] of Object.entries(schemaFiles(plugins))) {
    writeFileSync(path.join(values.out!, name), text);
    console.log(`wrote ${path.join(values.out!, name)}`);
  }
  return 0;
}
