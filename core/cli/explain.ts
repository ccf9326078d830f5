/**
 * `ghostgate explain`: run the pipeline on a request without calling any upstream, and show
 * which steps ran, which `when` held and why (the values it read), the local reply if any, the
 * final route and arm, and the upstream request with a body diff.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { builtinPlugins } from '../../plugins/index.ts';
import { loadConfig } from '../config/load.ts';
import { GatewayError } from '../errors.ts';
import type { GatewayExchange } from '../exchange.ts';
import { GatewayMetrics } from '../metrics.ts';
import { silentLogger } from '../plugin-context.ts';
import type { PipelineTrace } from '../pipeline.ts';
import { createExchange } from '../request/exchange-input.ts';
import { outboundRequest } from '../request/outbound.ts';
import { ROUTES } from '../request/routes.ts';
import type { RoutePath } from '../request/routes.ts';
import { buildRuntime } from '../runtime.ts';
import type { JsonValue, LocalReply, PluginDefinition } from '../types.ts';

export interface StepTrace {
  step: string; policy: string; where: string;
  when: unknown; whenResult: boolean | null; reads: Record<string, unknown>;
  result: 'ran' | 'skipped' | 'replied' | 'failed' | 'not reached' | 'would run at forwarding';
  reply?: LocalReply | { status: number; body: unknown };
}

export interface Explanation {
  request: { path: string; model: string };
  steps: StepTrace[];
  reply?: { status: number; body: unknown };
  route?: { model: string; upstream: string; upstreamModel: string; arms: Record<string, string> };
  upstream?: { name: string; path: string; headers: Record<string, string>; body: unknown; changes: Array<{ op: 'set' | 'remove' | 'add'; pointer: string; from?: unknown; to?: unknown }> };
  error?: { code: string; message: string };
}

/**
 * Dry-run the pipeline: the production loop (`CompiledPipeline.run`) with a trace hook that
 * records each step. `claims`, when given, stand in for a verified token: the hook records them
 * in place of the `auth` step's check of the Authorization header.
 */
export async function explain(configFile: string, path: RoutePath, body: unknown, headers: Record<string, string>, claims?: Record<string, unknown>): Promise<Explanation> {
  const loaded = loadConfig(configFile);
  const rt = await buildRuntime(loaded, {
    log: silentLogger, metrics: new GatewayMetrics(undefined, { defaults: false }),
    plugins: builtinPlugins as ReadonlyArray<PluginDefinition<unknown>>, sharedStore: new Map(), warm: false,
  });
  try {
    const made = createExchange(rt, { path, body, headers, ip: '127.0.0.1', protocol: 'h2', pathModel: path === '/v1/engines/:model/completions' ? String((body as { model?: string }).model ?? '') : undefined });
    if (made instanceof GatewayError) return { request: { path, model: '' }, steps: [], error: { code: made.code, message: made.message } };
    const { ex, asked } = made;
    const p = rt.pipeline(path, asked);
    const out: Explanation = { request: { path, model: asked }, steps: [] };
    for (const s of p.steps) out.steps.push({ step: s.name, policy: s.policy, where: s.where, when: s.whenSource ?? null, whenResult: null, reads: {}, result: 'not reached' });
    let failedAt: StepTrace | undefined;
    const trace: PipelineTrace = {
      step(s, x, held) {
        const st = out.steps[s.index]!;
        if (held !== null) { st.whenResult = held; st.reads = varsRead(s.whenSource, x.facts); }
        if (held === false) { st.result = 'skipped'; return false; }
        if (s.use === 'auth' && claims) { x.setClaims(claims); st.result = 'ran'; st.reads = { claims }; return false; }
        st.result = !s.step.request && s.step.forwarding ? 'would run at forwarding' : 'ran';
        return true;
      },
      result(s, reply, failed) {
        const st = out.steps[s.index]!;
        if (failed) { st.result = 'failed'; failedAt = st; }
        else if (reply) { st.result = 'replied'; st.reply = reply; out.reply = { status: reply.status, body: reply.body }; }
      },
    };
    try {
      await p.run(ex, trace);
    } catch (e) {
      // The production loop turns a step's throw into a catalogued error (GW_ERR_POLICY_STEP_FAILED).
      const err = e instanceof GatewayError ? e : new GatewayError('GW_ERR_POLICY_STEP_FAILED', [failedAt?.step ?? '']);
      out.reply = { status: err.status, body: err.toJSON() };
      if (failedAt) failedAt.reply = out.reply;
    }
    out.route = { ...ex.route };
    if (!out.reply) {
      const upstream = rt.upstreams.get(ex.route.upstream);
      if (!upstream) {
        const e = new GatewayError('GW_ERR_ROUTE_UNKNOWN_MODEL', [asked]);
        out.reply = { status: e.status, body: e.toJSON() };
      } else {
        const o = outboundRequest(ex as GatewayExchange, upstream.name, upstream.config.forwardHeaders, path, headers, undefined);
        const hs: Record<string, string> = { ...o.headers };
        if (upstream.config.credential) hs[upstream.config.credential.header] = '[upstream credential]';
        out.upstream = { name: upstream.name, path: o.path, headers: hs, body: ex.body, changes: diff(ex.originalBody as JsonValue, ex.body as JsonValue, '') };
      }
    }
    return out;
  } finally {
    await rt.retire(undefined);
  }
}

/** The values of every `var` a rule reads, for "why was this false". */
function varsRead(rule: unknown, facts: object, out: Record<string, unknown> = {}): Record<string, unknown> {
  if (Array.isArray(rule)) { for (const r of rule) varsRead(r, facts, out); return out; }
  if (rule === null || typeof rule !== 'object') return out;
  for (const [op, arg] of Object.entries(rule)) {
    if (op === 'var') {
      const p = Array.isArray(arg) ? arg[0] : arg;
      if (typeof p === 'string') out[p] = p.split('.').reduce<unknown>((x, k) => (x !== null && typeof x === 'object' ? (x as Record<string, unknown>)[k] : undefined), facts) ?? null;
    } else varsRead(arg, facts, out);
  }
  return out;
}

function diff(a: JsonValue | undefined, b: JsonValue | undefined, at: string, out: Explanation['upstream'] extends infer U ? U extends { changes: infer C } ? C : never : never = []): Array<{ op: 'set' | 'remove' | 'add'; pointer: string; from?: unknown; to?: unknown }> {
  if (a === b) return out;
  const isObj = (v: unknown): v is Record<string, JsonValue> => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (isObj(a) && isObj(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const ptr = `${at}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`;
      if (!(k in b)) out.push({ op: 'remove', pointer: ptr, from: a[k] });
      else if (!(k in a)) out.push({ op: 'add', pointer: ptr, to: b[k] });
      else diff(a[k], b[k], ptr, out);
    }
    return out;
  }
  if (JSON.stringify(a) !== JSON.stringify(b)) out.push({ op: 'set', pointer: at || '/', from: a, to: b });
  return out;
}

function relative(where: string): string {
  const r = path.relative(process.cwd(), where);
  return r.startsWith('..') ? where : r;
}

export function formatExplanation(e: Explanation): string {
  const L: string[] = [];
  L.push(`request  ${e.request.path}  model=${e.request.model || '(none)'}`);
  if (e.error) { L.push(`rejected before the pipeline: ${e.error.code} ${e.error.message}`); return L.join('\n'); }
  L.push('', 'steps:');
  e.steps.forEach((s, i) => {
    const cond = s.whenResult === null ? '' : `  when ${JSON.stringify(s.when)} → ${s.whenResult}${Object.keys(s.reads).length ? `  (read ${Object.entries(s.reads).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')})` : ''}`;
    L.push(`  ${String(i + 1).padStart(2)}. ${s.step.padEnd(15)} ${s.result.padEnd(24)} [${s.policy}] ${relative(s.where)}${cond}`);
  });
  if (e.steps.length === 0) L.push('  (no policy matches this route and model)');
  if (e.route) L.push('', `route    model=${e.route.model} upstream=${e.route.upstream || '(none)'} upstreamModel=${e.route.upstreamModel}${Object.keys(e.route.arms).length ? ` arms=${JSON.stringify(e.route.arms)}` : ''}`);
  if (e.reply) L.push('', `local reply ${e.reply.status}: ${JSON.stringify(e.reply.body)}`);
  if (e.upstream) {
    L.push('', `upstream ${e.upstream.name}  POST ${e.upstream.path}`);
    for (const [k, v] of Object.entries(e.upstream.headers)) L.push(`  ${k}: ${v}`);
    L.push('body changes:');
    if (e.upstream.changes.length === 0) L.push('  (none: the client\'s body is forwarded as sent)');
    for (const c of e.upstream.changes) L.push(`  ${c.op.padEnd(6)} ${c.pointer}${c.op !== 'add' ? `  ${JSON.stringify(c.from)}` : ''}${c.op !== 'remove' ? ` → ${JSON.stringify(c.to)}` : ''}`);
  }
  return L.join('\n');
}

export async function runExplainCli(argv: string[], defaultConfig: string): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' }, request: { type: 'string', short: 'r' }, header: { type: 'string', short: 'H', multiple: true },
      path: { type: 'string', default: '/v1/completions' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      claims: { type: 'string' },
    },
  });
  if (values.help || !values.request) {
    console.log('Usage: ghostgate explain --request req.json [--header "k: v"]... [--claims JSON] [--path /v1/completions] [--config F] [--json]\nDry-runs the pipeline on a request; no upstream is called. --claims stands in for a verified token.');
    return values.help ? 0 : 2;
  }
  if (!(ROUTES as readonly string[]).includes(values.path!)) throw new Error(`--path must be one of ${ROUTES.join(', ')}`);
  const body = JSON.parse(values.request === '-' ? readFileSync(0, 'utf8') : readFileSync(values.request, 'utf8')) as unknown;
  const headers: Record<string, string> = {};
  for (const h of values.header ?? []) {
    const i = h.indexOf(':');
    if (i < 1) throw new Error(`--header "${h}" must be "name: value"`);
    headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  const claims = values.claims ? JSON.parse(values.claims) as Record<string, unknown> : undefined;
  const e = await explain(values.config ?? defaultConfig, values.path as RoutePath, body, headers, claims);
  console.log(values.json ? JSON.stringify(e, null, 2) : formatExplanation(e));
  return 0;
}
