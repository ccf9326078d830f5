/**
 * `npm run e2e:copilot`: GitHub's real Copilot language server gets its ghost text from ghostgate.
 *
 * 1. Installs `@github/copilot-language-server` into a scratch directory on demand (not a project
 *    dependency: ~600 MB with its native binaries). Where it cannot be installed, prints SKIP and
 *    exits 0. `COPILOT_LS_VERSION` (default 1.539.0) and `GHOSTGATE_COPILOT_LS_DIR` (default
 *    $TMPDIR/ghostgate-copilot-ls) change what and where.
 * 2. Starts the bundled model server (answering at once: no simulated time to first token, so the
 *    comparison below measures ghostgate, not the model) and the stand-in together in one child
 *    process (so ghostgate's path has exactly one more process, ghostgate), ghostgate with its TLS listener and a
 *    certificate made for the run (trusted by the client through NODE_EXTRA_CA_CERTS), the
 *    Copilot front door, and a policy (auth, version-gate 466, supersede, set-params); and a
 *    minimal stand-in that answers every call of the client at once.
 * 3. Per transport (HTTP/2 over TLS, then HTTP/1.1 over http://), runs one language server against
 *    ghostgate and one against the stand-in, drives both over stdio as an editor would
 *    (initialize, initialized, workspace/didChangeConfiguration with telemetry off and the
 *    client's own debounce and display delay at 0 unless COPILOT_E2E_CLIENT_DELAYS=1,
 *    textDocument/didOpen, textDocument/inlineCompletion) on a fresh document per round
 *    (the client caches completions), alternating which goes first.
 * 4. Asserts: the ghost text is the bundled model's, the model received prompt, suffix and the
 *    set-params fields (which record the protocol ghostgate saw), an old editor gets 466 and the
 *    client reports it, zero 5xx on the Copilot surface; and the target: median inline completion
 *    through ghostgate within 1.5x the stand-in's, per transport. Exit 1 on any failure.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { generateApiKey, hashApiKey } from '../core/auth/index.ts';
import { catalog } from '../core/errors.ts';
import { Gateway } from '../core/gateway.ts';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { makeCert } from '../test/helpers/tls.ts';
import { LspClient } from './copilot-e2e/lsp.ts';

const VERSION = process.env.COPILOT_LS_VERSION ?? '1.539.0';
const SCRATCH = process.env.GHOSTGATE_COPILOT_LS_DIR ?? path.join(os.tmpdir(), 'ghostgate-copilot-ls');
const ROUNDS = Number(process.env.COPILOT_E2E_ROUNDS ?? 48);
const TARGET_RATIO = 1.5;
const WARMUP = 5;
/**
 * The client waits on its own before it asks (a debounce) and before it answers (it holds a
 * completion until ~200 ms after the request began). Both off by default here, so the times
 * compare the paths to the model, not the client's timers; COPILOT_E2E_CLIENT_DELAYS=1 keeps them.
 */
const CLIENT_DELAYS = process.env.COPILOT_E2E_CLIENT_DELAYS === '1';
const NO_CLIENT_DELAY = { github: { copilot: { completionsDelay: 0, completionsDebounce: 0 } } };
/** The bundled model's text starts with these tokens (model-server/server.ts). */
const MODEL_TEXT = 'fibonacci';

const failures: string[] = [];
function check(ok: boolean, what: string): void {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures.push(what);
}

/** The language server's entry script, installing it first if needed; undefined = skip. */
function ensureInstalled(): string | undefined {
  const pkg = path.join(SCRATCH, 'node_modules/@github/copilot-language-server');
  const script = path.join(pkg, 'dist/language-server.js');
  const installed = (): string | undefined => {
    try { return (JSON.parse(readFileSync(path.join(pkg, 'package.json'), 'utf8')) as { version: string }).version; } catch { return undefined; }
  };
  if (existsSync(script) && (VERSION === 'latest' || installed() === VERSION)) return script;
  mkdirSync(SCRATCH, { recursive: true });
  if (!existsSync(path.join(SCRATCH, 'package.json'))) writeFileSync(path.join(SCRATCH, 'package.json'), '{"private":true}\n');
  console.log(`installing @github/copilot-language-server@${VERSION} into ${SCRATCH} (not a project dependency; ~600 MB)...`);
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (/^npm_config_(prefix|global|location|workspaces?)$/i.test(k)) delete env[k];
  const r = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', `@github/copilot-language-server@${VERSION}`], { cwd: SCRATCH, env, stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8', timeout: 15 * 60_000 });
  if (r.status !== 0 || !existsSync(script)) {
    console.log(`SKIP: @github/copilot-language-server@${VERSION} cannot be installed here (npm exit ${r.status ?? r.signal ?? r.error?.message}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`);
    return undefined;
  }
  return script;
}

interface Ctx {
  ls: string;
  work: string;
  caFile: string;
  apiKey: string;
  answerers: Answerers;
  model: { url: string };
  gw: Gateway;
  standIn: { url: string; tlsUrl: string };
  logs: string[];
  clients: LspClient[];
}

async function main(): Promise<number> {
  const ls = ensureInstalled();
  if (!ls) return 0;
  const work = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-e2e-copilot-'));
  const clients: LspClient[] = [];
  let answerers: Answerers | undefined;
  let gw: Gateway | undefined;
  const guard = setTimeout(() => { console.error('FAIL: the e2e check did not finish within 10 minutes'); for (const c of clients) c.child.kill('SIGKILL'); answerers?.child.kill('SIGKILL'); process.exit(1); }, 10 * 60_000);
  guard.unref();
  try {
    const tls = makeCert();
    const caFile = path.join(work, 'ca.pem');
    writeFileSync(caFile, tls.cert);
    answerers = await startAnswerers(tls);
    const { model, standIn } = answerers;
    const apiKey = generateApiKey();
    const logs: string[] = [];
    gw = await startGateway(work, tls, model, apiKey, logs);
    const ctx: Ctx = { ls, work, caFile, apiKey, answerers, model, gw, standIn, logs, clients };
    const a = gw.addresses!;
    const results = [
      await phase(ctx, 'HTTP/2 over TLS', `https://127.0.0.1:${a.tlsPort}`, standIn.tlsUrl.replace('localhost', '127.0.0.1'), 'h2'),
      await phase(ctx, 'HTTP/1.1 over http://', a.cleartext, standIn.url, 'h1'),
    ];
    await upgradeRequired(ctx, a.cleartext);
    await noServerErrors(ctx);
    console.log(`\nInline completion, textDocument/inlineCompletion request to answer, as the editor sees it (client delays ${CLIENT_DELAYS ? 'on (its defaults)' : 'off: completionsDelay 0, completionsDebounce 0'}):`);
    console.log('| transport | rounds | ghostgate p50 | ghostgate p90 | stand-in p50 | stand-in p90 | ratio p50 | target |');
    console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const r of results) {
      console.log(`| ${r.name} | ${r.gw.length} | ${q(r.gw, 0.5).toFixed(1)} ms | ${q(r.gw, 0.9).toFixed(1)} ms | ${q(r.si, 0.5).toFixed(1)} ms | ${q(r.si, 0.9).toFixed(1)} ms | ${(q(r.gw, 0.5) / q(r.si, 0.5)).toFixed(2)}x | <= ${TARGET_RATIO}x |`);
    }
    console.log('\nThe same requests as the client logs them ("[fetchCompletions] ... finished ... after N ms": request sent to response read):');
    console.log('| transport | ghostgate p50 | ghostgate p90 | stand-in p50 | stand-in p90 | added p50 |');
    console.log('| --- | --- | --- | --- | --- | --- |');
    for (const r of results) {
      console.log(`| ${r.name} | ${q(r.gwFetch, 0.5).toFixed(1)} ms | ${q(r.gwFetch, 0.9).toFixed(1)} ms | ${q(r.siFetch, 0.5).toFixed(1)} ms | ${q(r.siFetch, 0.9).toFixed(1)} ms | ${(q(r.gwFetch, 0.5) - q(r.siFetch, 0.5)).toFixed(1)} ms |`);
    }
    for (const r of results) check(q(r.gw, 0.5) <= TARGET_RATIO * q(r.si, 0.5), `${r.name}: median through ghostgate within ${TARGET_RATIO}x of the stand-in`);
    console.log(`gateway log lines: ${logs.length} (${[...new Set(logs.map((l) => (JSON.parse(l) as { msg?: string }).msg))].join('; ')})`);
  } catch (e) {
    failures.push(e instanceof Error ? e.stack ?? e.message : String(e));
    console.error('FAIL:', e);
  } finally {
    await Promise.allSettled(clients.map((c) => c.stop()));
    await Promise.allSettled([gw?.close(2000), answerers?.stop()]);
    clearTimeout(guard);
    rmSync(work, { recursive: true, force: true });
  }
  console.log(failures.length ? `\n${failures.length} check(s) failed` : '\nall checks passed');
  return failures.length ? 1 : 0;
}

async function startGateway(work: string, tls: { key: string; cert: string }, model: { url: string }, apiKey: string, logs: string[]): Promise<Gateway> {
  const dir = path.join(work, 'gateway');
  mkdirSync(path.join(dir, 'policies'), { recursive: true });
  mkdirSync(path.join(dir, 'secrets'), { recursive: true });
  writeFileSync(path.join(dir, 'secrets/tls.key'), tls.key);
  writeFileSync(path.join(dir, 'secrets/tls.crt'), tls.cert);
  writeFileSync(path.join(dir, 'secrets/signing.pem'), generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString());
  writeFileSync(path.join(dir, 'secrets/api-keys.yaml'), `- { sub: e2e-user, hash: "${await hashApiKey(apiKey)}" }\n`);
  writeFileSync(path.join(dir, 'gateway.config.yaml'), `
listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, cert: { file: secrets/tls.crt }, key: { file: secrets/tls.key } } }
admin: { host: 127.0.0.1, port: 0 }
upstreams:
  local: { url: ${model.url}, protocol: h2c, pool: { size: 2 } }
models:
  ghost-small: { upstream: local, upstreamModel: ghost-small-v1, aliases: [gpt-41-copilot] }
policies: [policies/*.yaml]
reload: { watch: false }
auth:
  tokenTtl: 30m
  signingKeys: [{ kid: e2e, privateKey: { file: secrets/signing.pem } }]
  credentials: { apiKeys: { file: secrets/api-keys.yaml } }
copilot: { enabled: true }
`);
  writeFileSync(path.join(dir, 'policies/copilot.yaml'), `
name: copilot
match: { paths: [/v1/engines/:model/completions] }
steps:
  - use: auth
  - use: version-gate
    params: { minimum: { vscode: "1.90.0" }, status: 466, message: "ghostgate e2e: please upgrade your editor" }
  - use: supersede
    params: { keyFrom: { header: vscode-sessionid } }
  - use: set-params
    name: mark-h2
    when: { "==": [{ var: request.protocol }, "h2"] }
    params: { set: { /extra/ghostgate: "h2", /temperature: 0.1 } }
  - use: set-params
    name: mark-h1
    when: { "==": [{ var: request.protocol }, "h1"] }
    params: { set: { /extra/ghostgate: "h1", /temperature: 0.1 } }
`);
  const stream = new Writable({ write(chunk, _e, cb) { logs.push(...String(chunk).split('\n').filter(Boolean)); cb(); } });
  return Gateway.start({ configFile: path.join(dir, 'gateway.config.yaml'), watch: false, logger: { level: 'info', stream } });
}

/** Start one language server pointed at `base`, initialised like an editor with telemetry off. */
async function startClient(ctx: Ctx, name: string, base: string, editorVersion = '1.95.0'): Promise<LspClient> {
  const home = path.join(ctx.work, `home-${name.replace(/\W+/g, '-')}`);
  mkdirSync(home, { recursive: true });
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH, HOME: home, XDG_CONFIG_HOME: path.join(home, '.config'), XDG_STATE_HOME: path.join(home, '.state'), TMPDIR: os.tmpdir(),
    GH_COPILOT_TOKEN: ctx.apiKey, GH_COPILOT_API_URL: base, GH_COPILOT_SERVER_URL: base, NODE_EXTRA_CA_CERTS: ctx.caFile,
  };
  const c = new LspClient(process.execPath, ctx.ls, env, home);
  ctx.clients.push(c);
  await c.request('initialize', {
    processId: process.pid,
    rootUri: `file://${home}`,
    workspaceFolders: [{ uri: `file://${home}`, name: 'e2e' }],
    capabilities: { workspace: { workspaceFolders: true, configuration: true } },
    initializationOptions: { editorInfo: { name: 'vscode', version: editorVersion }, editorPluginInfo: { name: 'ghostgate-e2e', version: '1.0.0' } },
  }, 60_000);
  c.notify('initialized', {});
  c.notify('workspace/didChangeConfiguration', { settings: { telemetry: { telemetryLevel: 'off' }, http: { proxyStrictSSL: true }, ...(CLIENT_DELAYS ? {} : NO_CLIENT_DELAY) } });
  return c;
}

let docSeq = 0;
/** Open a fresh document (so the client's cache cannot answer) and ask for ghost text at its cursor. */
async function complete(c: LspClient, home: string): Promise<{ ms: number; text: string | undefined }> {
  const n = ++docSeq;
  const uri = `file://${home}/doc${n}.py`;
  const text = `# utilities, revision ${n}\n\n\ndef compute_${n}(values):\n    \n\nprint(compute_${n}([1, 2, 3]))\n`;
  c.notify('textDocument/didOpen', { textDocument: { uri, languageId: 'python', version: 1, text } });
  const t0 = performance.now();
  const r = await c.request('textDocument/inlineCompletion', {
    textDocument: { uri, version: 1 }, position: { line: 4, character: 4 }, context: { triggerKind: 2 }, formattingOptions: { tabSize: 4, insertSpaces: true },
  }, 30_000) as { items?: Array<{ insertText: string }> } | null;
  const ms = performance.now() - t0;
  c.notify('textDocument/didClose', { textDocument: { uri } });
  return { ms, text: r?.items?.[0]?.insertText };
}

interface PhaseResult { name: string; gw: number[]; si: number[]; gwFetch: number[]; siFetch: number[] }

async function phase(ctx: Ctx, name: string, gwBase: string, siBase: string, proto: 'h2' | 'h1'): Promise<PhaseResult> {
  console.log(`\n== ${name}: ghostgate ${gwBase}, stand-in ${siBase}`);
  await fetch(`${ctx.model.url}/_reset`, { method: 'POST' });
  const siBefore = await standInCount(ctx);
  const [g, s] = await Promise.all([startClient(ctx, `gw-${proto}`, gwBase), startClient(ctx, `si-${proto}`, siBase)]);
  const gHome = path.join(ctx.work, `home-gw-${proto}`);
  const sHome = path.join(ctx.work, `home-si-${proto}`);
  // Warm-up, not measured: sign-in, token exchange, first connections, and the JIT of both paths.
  for (let i = 0; i < WARMUP; i++) { await complete(g, gHome); await complete(s, sHome); }
  const gw: number[] = [];
  const si: number[] = [];
  let gwTexts = 0;
  let siTexts = 0;
  for (let i = 0; i < ROUNDS; i++) {
    const order = i % 2 === 0 ? ['g', 's'] : ['s', 'g'];
    for (const which of order) {
      if (which === 'g') {
        const r = await complete(g, gHome);
        gw.push(r.ms);
        if (r.text?.includes(MODEL_TEXT)) gwTexts++;
        else if (gwTexts === 0 && i === 0) console.log(`   ghostgate ghost text: ${JSON.stringify(r.text)}`);
        if (i === 0 && proto === 'h2') console.log(`   ghost text through ghostgate: ${JSON.stringify(r.text)}`);
      } else {
        const r = await complete(s, sHome);
        si.push(r.ms);
        if (r.text?.includes('standin')) siTexts++;
        else if (siTexts === 0 && i === 0) console.log(`   stand-in ghost text: ${JSON.stringify(r.text)}`);
      }
    }
  }
  check(gwTexts === ROUNDS, `${name}: ${gwTexts}/${ROUNDS} ghost texts through ghostgate are the bundled model's ("${MODEL_TEXT}")`);
  check(siTexts === ROUNDS, `${name}: ${siTexts}/${ROUNDS} ghost texts from the stand-in are its own ("standin")`);
  // The model server keeps its last 50 requests, and counts all of them.
  const mine = (await modelRequests(ctx)).filter((r) => r.path === '/v1/completions');
  const count = ((await (await fetch(`${ctx.model.url}/_stats`)).json()) as { requests: number }).requests;
  check(count === ROUNDS + WARMUP && mine.length === Math.min(50, count), `${name}: the model received ${count} completion requests (${ROUNDS} rounds + ${WARMUP} warm-up)`);
  check(mine.every((r) => (r.body.extra as Record<string, unknown> | undefined)?.ghostgate === proto), `${name}: every one went through ghostgate's policy as ${proto} (set-params wrote extra.ghostgate = "${proto}")`);
  check(mine.every((r) => r.body.model === 'ghost-small-v1'), `${name}: engine gpt-41-copilot → model ghost-small → upstream model ghost-small-v1`);
  check(mine.every((r) => typeof r.body.prompt === 'string' && (r.body.prompt as string).includes('def compute_') && typeof r.body.suffix === 'string' && (r.body.suffix as string).includes('print(compute_')),
    `${name}: prompt and suffix reached the model as the client sent them`);
  check(mine.every((r) => r.body.temperature === 0.1 && r.headers.authorization === undefined), `${name}: set-params applied; the client's token is not forwarded`);
  check(await standInCount(ctx) - siBefore === ROUNDS + WARMUP, `${name}: the stand-in received its ${ROUNDS} + ${WARMUP} requests`);
  const sample = mine.at(-1);
  if (sample) console.log(`   the client's completion request as the model got it: headers ${Object.keys(sample.headers).filter((h) => !h.startsWith(':')).join(', ')}; body keys ${Object.keys(sample.body).join(', ')}`);
  await Promise.all([g.stop(), s.stop()]);
  return { name, gw, si, gwFetch: fetchTimes(g).slice(WARMUP), siFetch: fetchTimes(s).slice(WARMUP) };
}

/** The client's own log of each completion fetch: "... finished with 200 status after 12.9 ms". */
function fetchTimes(c: LspClient): number[] {
  const out: number[] = [];
  for (const l of c.log) {
    const m = /\[fetchCompletions\] Request \S+ at <[^>]+> finished with \d+ status after ([\d.]+)/.exec(l);
    if (m) out.push(Number(m[1]));
  }
  return out;
}

/** An editor older than the version gate gets 466, and the client reports "client not supported". */
async function upgradeRequired(ctx: Ctx, base: string): Promise<void> {
  const c = await startClient(ctx, 'old-editor', base, '1.80.0');
  const r = await complete(c, path.join(ctx.work, 'home-old-editor'));
  check(r.text === undefined, 'an old editor (vscode/1.80.0) gets no ghost text');
  const seen = c.log.some((l) => /466|not supported|please upgrade/i.test(l))
    || c.notes.some((n) => /please upgrade|not supported/i.test(JSON.stringify(n.params)));
  check(seen, 'the client reports the 466 ("client not supported", the version-gate message)');
  await c.stop();
}

/** Zero 5xx on the Copilot surface, from the gateway's own metrics. */
async function noServerErrors(ctx: Ctx): Promise<void> {
  const text = await (await fetch(`${ctx.gw.addresses!.admin}/metrics`)).text();
  const lines = text.split('\n');
  const five = (name: string): number => lines.filter((l) => l.startsWith(name + '{') && /status="5\d\d"/.test(l)).reduce((s, l) => s + Number(l.split(' ').at(-1)), 0);
  const errs = lines.filter((l) => l.startsWith('ghostgate_errors_total{')).map((l) => [/code="([^"]+)"/.exec(l)![1]!, Number(l.split(' ').at(-1))] as const);
  const fiveCodes = errs.filter(([code, n]) => n > 0 && (catalog as Record<string, { status: number }>)[code]!.status >= 500);
  const front = lines.filter((l) => l.startsWith('ghostgate_copilot_front_door_total{')).map((l) => `${/route="(\w+)"/.exec(l)![1]} ${/status="(\d+)"/.exec(l)![1]}: ${l.split(' ').at(-1)}`);
  console.log(`   front door replies: ${front.join(', ')}`);
  console.log(`   error replies by code: ${errs.map(([c, n]) => `${c}: ${n}`).join(', ') || 'none'}`);
  check(five('ghostgate_requests_total') === 0 && five('ghostgate_copilot_front_door_total') === 0 && fiveCodes.length === 0, `zero 5xx on the Copilot surface (${fiveCodes.map(([c]) => c).join(', ') || 'none'})`);
}

async function standInCount(ctx: Ctx): Promise<number> {
  return ((await (await fetch(`${ctx.standIn.url}/_count`)).json()) as { completions: number }).completions;
}

interface Answerers { child: ChildProcess; model: { url: string }; standIn: { url: string; tlsUrl: string }; stop(): Promise<void> }

/** The bundled model and the stand-in, together in one child process (see copilot-e2e/answerers.ts). */
async function startAnswerers(tls: { key: string; cert: string }): Promise<Answerers> {
  const script = fileURLToPath(new URL('./copilot-e2e/answerers.ts', import.meta.url));
  const child = spawn(process.execPath, [script, JSON.stringify({ key: tls.key, cert: tls.cert, tokens: 9 })], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`the answerers process exited (${code}) before it was ready`)));
  });
  const ready = JSON.parse(line) as { model: string; standIn: { url: string; tlsUrl: string } };
  return {
    child, model: { url: ready.model }, standIn: ready.standIn,
    async stop() { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGTERM'); await exited; } },
  };
}

async function modelRequests(ctx: Ctx): Promise<Array<{ path: string; headers: Record<string, string>; body: Record<string, unknown> }>> {
  return (await fetch(`${ctx.model.url}/_requests`)).json() as Promise<never>;
}

function q(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
}

// The certificate helper shells out to openssl; say so plainly if it is missing.
try { execFileSync('openssl', ['version'], { stdio: 'ignore' }); } catch { console.log('SKIP: the openssl CLI is needed to make the run\'s certificate'); process.exit(0); }
process.exitCode = await main();
