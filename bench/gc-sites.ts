/**
 * Which allocation sites' objects outlive a scavenge: two V8 sampling heap profiles of the same
 * load, one with every sampled allocation (`all.heapprofile`) and one with the objects that minor
 * GCs collected left out (`survivors.heapprofile`), both written by `bench/gc-sites-hook.mjs`
 * (`gc-survival.ts --sites` runs it). Per site: bytes per request allocated, bytes per request
 * that survived a scavenge, and the site's share of all survivors.
 *
 *   npx node bench/gc-sites.ts <dir with the two profiles> --requests 100000 [--by chain|top|ours] [--top 30]
 *
 * A site is `--by`:
 *   top:   the frame that allocated (for Node internals, e.g. `Http2Stream` in node:internal/http2/core)
 *   ours:  the nearest frame in this repo's code (not node_modules) on the allocating stack, or the
 *          top frame if none (allocations made by Node with none of our code on the stack)
 *   chain: both, `top ← ours` (default)
 *
 * "Survivors" also counts objects still alive when the profile stopped and objects a mark-compact
 * collected while they were young (mark-compacts are ~1% of GCs here): both small next to what the
 * scavenges promote under sustained load.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

interface CallFrame { functionName: string; url: string; lineNumber: number }
interface ProfileNode { callFrame: CallFrame; selfSize: number; children: ProfileNode[] }
export interface SamplingProfile { head: ProfileNode }
export type SiteKey = 'top' | 'ours' | 'chain';

const ROOT = path.resolve(import.meta.dirname, '..');
const ROOT_URL = `file://${ROOT}/`;

function short(url: string): string {
  if (url.startsWith(ROOT_URL)) return url.slice(ROOT_URL.length).replace(/^node_modules\//, '~');
  return url;
}
const ours = (f: CallFrame): boolean => f.url.startsWith(ROOT_URL) && !f.url.includes('/node_modules/');
const label = (f: CallFrame): string => `${f.functionName || '(anonymous)'}${f.url ? ` ${short(f.url)}:${f.lineNumber + 1}` : ''}`;

/** Bytes per site (sampling estimates, scaled by V8 to the whole allocation). */
export function bySite(p: SamplingProfile, by: SiteKey): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (n: ProfileNode, own: CallFrame | undefined, parent: CallFrame | undefined): void => {
    const f = n.callFrame;
    const mine = ours(f) ? f : own;
    if (n.selfSize > 0) {
      // Native frames ('(V8 API)', no url) say little alone: name their caller too.
      const top = f.url === '' && parent !== undefined ? `${f.functionName} ← ${label(parent)}` : label(f);
      const key = by === 'top' ? top
        : by === 'ours' ? (mine ? label(mine) : `(node) ${top}`)
        : mine === undefined ? `${top} ← (no frame of ours)` : mine === f ? top : `${top} ← ${label(mine)}`;
      out.set(key, (out.get(key) ?? 0) + n.selfSize);
    }
    for (const c of n.children) walk(c, mine, f.url === '' ? parent : f);
  };
  walk(p.head, undefined, undefined);
  return out;
}

const sum = (m: Map<string, number>): number => { let s = 0; for (const v of m.values()) s += v; return s; };

/** The table: sites by bytes per request that outlived a scavenge. */
export function siteReport(all: SamplingProfile, survivors: SamplingProfile, requests: number, by: SiteKey = 'chain', top = 30): string {
  const a = bySite(all, by);
  const s = bySite(survivors, by);
  const totalA = sum(a);
  const totalS = sum(s);
  const rows = [...s.entries()].sort((x, y) => y[1] - x[1]).slice(0, top);
  const lines = [
    `allocated ${(totalA / requests).toFixed(0)} B/request (sampled), outlived a scavenge ${(totalS / requests).toFixed(0)} B/request (${(100 * totalS / totalA).toFixed(1)}%)`,
    ` survived B/req  allocated B/req  site survives  share of survivors  site (${by})`,
  ];
  for (const [k, v] of rows) {
    const al = a.get(k) ?? 0;
    lines.push(`${(v / requests).toFixed(0).padStart(15)}  ${(al / requests).toFixed(0).padStart(15)}  ${(al > 0 ? `${(100 * v / al).toFixed(0)}%` : '-').padStart(13)}  ${`${(100 * v / totalS).toFixed(1)}%`.padStart(18)}  ${k}`);
  }
  return lines.join('\n');
}

export function readProfiles(dir: string): { all: SamplingProfile; survivors: SamplingProfile } {
  const read = (m: string): SamplingProfile => JSON.parse(readFileSync(path.join(dir, `${m}.heapprofile`), 'utf8')) as SamplingProfile;
  return { all: read('all'), survivors: read('survivors') };
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { requests: { type: 'string', default: '100000' }, by: { type: 'string', default: 'chain' }, top: { type: 'string', default: '30' } } });
  const { all, survivors } = readProfiles(positionals[0] ?? '.');
  console.log(siteReport(all, survivors, Number(values.requests), values.by as SiteKey, Number(values.top)));
}
