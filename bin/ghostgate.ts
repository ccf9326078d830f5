#!/usr/bin/env node
/**
 * ghostgate CLI. From a checkout, run it as `npm run -s gg -- <command>` (the pinned Node 24, no
 * npm noise), or `node bin/ghostgate.ts <command>` with Node 24.
 *
 *   ghostgate start [--config F]           run the gateway (default: the bundled gateway.config.yaml)
 *   ghostgate validate [--config F]        check config + policies; every problem as file:line, in one run
 *   ghostgate model-server [--port N ...]  run the bundled fake model server
 *   ghostgate token --sub NAME [--ttl 10m] mint a short-lived token (needs `auth:` in the config)
 *   ghostgate apikey new --sub NAME        make an API key and its hashed entry for the API keys file
 *   ghostgate explain --request req.json [--header k:v] [--claims JSON]  dry-run the pipeline on a request
 *   ghostgate plugins                      list the built-in plugins
 *   ghostgate schema [--out DIR]           write JSON Schemas for the config and policy files
 */
import { parseArgs } from 'node:util';
import { commands } from '../core/cli/commands.ts';

const [cmd, ...rest] = process.argv.slice(2);
const run = cmd !== undefined && Object.hasOwn(commands, cmd) ? commands[cmd] : undefined;
if (!run || cmd === '--help' || cmd === '-h') {
  const usage = `Usage: ghostgate <command> [options]

Commands:
${Object.entries(commands).map(([name, c]) => `  ${name.padEnd(13)} ${c.summary}`).join('\n')}

Run "ghostgate <command> --help" for a command's options.
`;
  // Asked for (no command, --help): stdout, exit 0. A command that does not exist: say so first,
  // all on stderr, exit 2 (a usage error, as a wrong option of a command).
  if (cmd === undefined || cmd === '--help' || cmd === '-h') process.stdout.write(usage);
  else { process.stderr.write(`ghostgate: unknown command "${cmd}"\n${usage}`); process.exitCode = 2; }
  process.exit();
}
void parseArgs;
try {
  const code = await run.run(rest);
  if (typeof code === 'number') process.exitCode = code;
} catch (e) {
  process.stderr.write(`ghostgate ${cmd}: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 2;
}
