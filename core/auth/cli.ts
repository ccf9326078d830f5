/**
 * `ghostgate token --sub alice [--ttl 10m] [--claim plan=pro]... [--json]`: mint a token with the
 * configured signing key and print it (the token alone, or `{token, expires_at}` with --json).
 * A claim value that parses as JSON is used as JSON (`--claim beta=true`, `--claim features='["x"]'`),
 * anything else as a string.
 */
import { parseArgs } from 'node:util';
import type { Writable } from 'node:stream';
import { GatewayError } from '../errors.ts';
import { parseDuration } from './config.ts';
import type { AuthService } from './index.ts';
import { RESERVED_CLAIMS } from './schema.ts';

export const TOKEN_CLI_USAGE = 'usage: ghostgate token --sub <subject> [--ttl <30m|3600>] [--claim key=value]... [--json]';

function usage(problem: string): GatewayError {
  return new GatewayError('GW_ERR_REQ_BAD_REQUEST', [`${problem}\n${TOKEN_CLI_USAGE}`]);
}

/**
 * Parse argv (without `token`), mint, print. Throws GatewayError on bad arguments. With the
 * dev-mode ephemeral key, warns on `err`: such a token verifies only in the process that minted it.
 */
export async function runTokenCli(argv: string[], service: AuthService, out: Pick<Writable, 'write'> = process.stdout, err: Pick<Writable, 'write'> = process.stderr): Promise<void> {
  let values: { sub?: string; ttl?: string; claim?: string[]; json?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { sub: { type: 'string' }, ttl: { type: 'string' }, claim: { type: 'string', multiple: true }, json: { type: 'boolean' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw usage((e as Error).message);
  }
  if (!values.sub) throw usage('--sub is required');
  let ttl: number | undefined;
  if (values.ttl !== undefined) {
    ttl = parseDuration(values.ttl);
    if (ttl === undefined) throw usage(`--ttl "${values.ttl}" is not a duration (e.g. 600, 10m, 1h)`);
  }
  const claims: { sub: string; [k: string]: unknown } = { sub: values.sub };
  for (const kv of values.claim ?? []) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw usage(`--claim "${kv}" must be key=value`);
    const k = kv.slice(0, eq);
    if (k === 'sub' || (RESERVED_CLAIMS as readonly string[]).includes(k)) throw usage(`--claim ${k}: this claim is set by the gateway`);
    const raw = kv.slice(eq + 1);
    let v: unknown = raw;
    try { v = JSON.parse(raw); } catch { /* a plain string */ }
    claims[k] = v;
  }
  if (service.ephemeral) {
    err.write('warning: auth.dev is signing with an ephemeral key that lives only in this process; a running gateway will not accept this token (configure auth.signingKeys)\n');
  }
  const { token, expires_at } = await service.mint(claims, ttl);
  out.write(values.json ? `${JSON.stringify({ token, expires_at })}\n` : `${token}\n`);
}
