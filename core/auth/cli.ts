/**
 * `ghostgate token --sub alice [--ttl 10m] [--claim plan=pro]... [--json]`: mint a token with the
 * configured signing key and print it (the token alone, or `{token, expires_at}` with --json).
 * A claim value that parses as JSON is used as JSON (`--claim beta=true`, `--claim features='["x"]'`),
 * anything else as a string.
 */
import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Writable } from 'node:stream';
import { GatewayError } from '../errors.ts';
import { parseDuration } from './config.ts';
import { ApiKeyStore, generateApiKey, hashApiKey } from './api-keys.ts';
import { RESERVED_CLAIMS } from './schema.ts';

/** What the CLI needs from an auth service (the gateway's, or the running one's admin plane). */
export interface TokenMinter {
  /** Dev mode's in-memory key: a token it mints verifies only in that process. */
  readonly ephemeral?: boolean;
  mint(claims: { sub: string; [k: string]: unknown }, ttlSeconds?: number): Promise<{ token: string; expires_at: number }>;
}

export const TOKEN_CLI_USAGE = 'usage: ghostgate token --sub <subject> [--ttl <30m|3600>] [--claim key=value]... [--json]';

function usage(problem: string): GatewayError {
  return new GatewayError('GW_ERR_REQ_BAD_REQUEST', [`${problem}\n${TOKEN_CLI_USAGE}`]);
}

/**
 * Parse argv (without `token`), mint, print. Throws GatewayError on bad arguments. With the
 * dev-mode ephemeral key, warns on `err`: such a token verifies only in the process that minted it.
 */
export async function runTokenCli(argv: string[], service: TokenMinter, out: Pick<Writable, 'write'> = process.stdout, err: Pick<Writable, 'write'> = process.stderr): Promise<void> {
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

export const APIKEY_CLI_USAGE = 'usage: ghostgate apikey new --sub <subject> [--claim key=value]... [--scrypt --id <id>] [--append <api-keys.yaml>]';

/**
 * `ghostgate apikey new --sub alice [--claim plan=pro]... [--append secrets/api-keys.yaml]`:
 * generate an API key and the entry for the API keys file (`auth.credentials.apiKeys`). The key
 * is printed once and stored nowhere; the file gets only its hash. With `--append` the entry is
 * added to the file (created 0600 if missing) and stdout carries the key alone.
 * `--scrypt --id bob1`: the scrypt form (for keys people choose; the key is `<id>.<secret>`).
 */
export async function runApiKeyCli(argv: string[], out: Pick<Writable, 'write'> = process.stdout, err: Pick<Writable, 'write'> = process.stderr): Promise<void> {
  const [verb, ...rest] = argv;
  if (verb !== 'new') throw new GatewayError('GW_ERR_REQ_BAD_REQUEST', [`${verb === undefined ? 'a subcommand is required' : `unknown subcommand "${verb}"`}\n${APIKEY_CLI_USAGE}`]);
  let values: { sub?: string; claim?: string[]; scrypt?: boolean; id?: string; append?: string };
  try {
    ({ values } = parseArgs({
      args: rest, strict: true, allowPositionals: false,
      options: { sub: { type: 'string' }, claim: { type: 'string', multiple: true }, scrypt: { type: 'boolean' }, id: { type: 'string' }, append: { type: 'string' } },
    }));
  } catch (e) {
    throw new GatewayError('GW_ERR_REQ_BAD_REQUEST', [`${(e as Error).message}\n${APIKEY_CLI_USAGE}`]);
  }
  const bad = (problem: string): GatewayError => new GatewayError('GW_ERR_REQ_BAD_REQUEST', [`${problem}\n${APIKEY_CLI_USAGE}`]);
  if (!values.sub) throw bad('--sub is required');
  if (values.scrypt && !(values.id && /^[A-Za-z0-9_-]{1,64}$/.test(values.id))) throw bad('--scrypt needs --id ([A-Za-z0-9_-]{1,64}); the key is "<id>.<secret>"');
  if (values.id && !values.scrypt) throw bad('--id goes with --scrypt');
  const claims: Record<string, unknown> = {};
  for (const kv of values.claim ?? []) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw bad(`--claim "${kv}" must be key=value`);
    const raw = kv.slice(eq + 1);
    let v: unknown = raw;
    try { v = JSON.parse(raw); } catch { /* a plain string */ }
    claims[kv.slice(0, eq)] = v;
  }
  const key = generateApiKey(values.scrypt ? values.id : undefined);
  const hash = await hashApiKey(key, values.scrypt ? 'scrypt' : 'sha256');
  const entry = [
    `- sub: ${JSON.stringify(values.sub)}`,
    ...(values.scrypt ? [`  id: ${values.id}`] : []),
    `  hash: ${hash}`,
    ...(Object.keys(claims).length ? [`  claims: ${JSON.stringify(claims)}`] : []),
  ].join('\n') + '\n';
  if (values.append) {
    const file = path.resolve(values.append);
    mkdirSync(path.dirname(file), { recursive: true });
    let before = '';
    try { before = readFileSync(file, 'utf8'); } catch { /* a new file */ }
    // The file must stay a list: check the result parses before writing it.
    const next = (before && !before.endsWith('\n') ? before + '\n' : before) + entry;
    ApiKeyStore.parse(next, values.append);
    appendFileSync(file, next.slice(before.length), { mode: 0o600 });
    out.write(`${key}\n`);
    err.write(`added "${values.sub}" to ${values.append}; reload the gateway to apply (give the key above to its user: it is stored nowhere)\n`);
    return;
  }
  out.write(`# API key for "${values.sub}": give it to its user (it is stored nowhere; only its hash goes in the file)\n${key}\n`);
  out.write(`# add to the API keys file (auth.credentials.apiKeys), then reload:\n${entry}`);
}
