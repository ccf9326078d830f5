#!/usr/bin/env node
/**
 * ghostgate CLI.
 *
 *   ghostgate start [--config F]           run the gateway (default: the bundled gateway.config.yaml)
 *   ghostgate validate [--config F]        check config + policies; every problem as file:line
 *   ghostgate model-server [--port N ...]  run the bundled fake model server
 *   ghostgate token --sub NAME [--ttl 10m] mint a short-lived token (needs `auth:` in the config)
 *   ghostgate explain --request req.json [--header k:v]  dry-run the pipeline on a request
 *   ghostgate schema [--out DIR]           write JSON Schemas for the config and policy files
 */
import { parseArgs } from 'node:util';
import { commands } from '../core/cli/commands.ts';

const [cmd, ...rest] = process.argv.slice(2);
const run = cmd ? commands[cmd] : undefined;
if (!run || cmd === '--help' || cmd === '-h') {
  process.stdout.write(`Usage: ghostgate <command> [options]

Commands:
${Object.entries(commands).map(([name, c]) => `  ${name.padEnd(13)} ${c.summary}`).join('\n')}

Run "ghostgate <command> --help" for a command's options.
`);
  process.exit(run || cmd === undefined || cmd === '--help' || cmd === '-h' ? 0 : 2);
}
void parseArgs;
try {
  const code = await run.run(rest);
  if (typeof code === 'number') process.exitCode = code;
} catch (e) {
  process.stderr.write(`ghostgate ${cmd}: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 2;
}
