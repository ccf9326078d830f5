// Why AsyncResource.prototype.bind (which Node's ClientHttp2Session.request() calls for every
// stream) keeps what it binds alive across scavenges: the same loop, allocating a small graph per
// iteration, with and without an accessor property (a fresh getter closure) defined on a fresh
// object; the share of young allocation that survives scavenges, from --trace-gc-nvp.
//   npx node bench/gc-accessor.mjs
// The object's new shape (map) holding the getter lives in the old generation, so the getter and
// all it reaches survive every scavenge until a mark-compact (bench/README.md, GC).
import { spawnSync } from 'node:child_process';
import { AsyncResource } from 'node:async_hooks';

const mode = process.argv[2];
if (mode !== undefined) {
  let sink = 0;
  const churn = () => {
    for (let i = 0; i < 500; i++) {
      const o = { a: new Array(200).fill(i), b: { c: i } };
      if (mode === 'value') { const t = {}; Object.defineProperty(t, 'x', { configurable: true, enumerable: true, value: o }); sink += t.x.b.c; }
      else if (mode === 'accessor') { const t = {}; Object.defineProperty(t, 'x', { configurable: true, enumerable: true, get: () => o }); sink += t.x.b.c; }
      else if (mode === 'AsyncResource.bind') sink += new AsyncResource('x').bind(() => o.b.c)();
      else sink += o.b.c;
    }
  };
  let rounds = 0;
  const tick = () => { churn(); if (++rounds < 1000) setImmediate(tick); else if (sink < 0) console.log(sink); };
  tick();
} else {
  for (const m of ['plain', 'value', 'accessor', 'AsyncResource.bind']) {
    const out = spawnSync(process.execPath, ['--trace-gc-nvp', import.meta.filename, m], { encoding: 'utf8' }).stdout;
    let alloc = 0; let survived = 0; let scavenges = 0; let mc = 0;
    for (const l of out.split('\n')) {
      const num = (k) => Number(l.match(new RegExp(` ${k}=(\\d+)`))?.[1] ?? 0);
      if (l.includes(' gc=s ')) { scavenges++; alloc += num('allocated'); survived += num('new_space_survived'); } else if (l.includes(' gc=mc ')) mc++;
    }
    console.log(`${m.padEnd(18)} survived ${(100 * survived / alloc).toFixed(2).padStart(6)}%   ${scavenges} scavenges, ${mc} mark-compacts`);
  }
}
