/**
 * Micro-benchmark of token verification (issue #3 targets: ≤ 5 µs cached, ≤ 150 µs uncached).
 * Run: npx node bench/auth-verify.ts [tokens=5000] [runs=7]   (Node 24)
 * Prints the median per-verification time over `runs` runs for: uncached (first sight of a
 * token: header checks, jose's compactVerify, claim checks, cache insert; awaited one after
 * another), cached (repeat of the same tokens: synchronous, no promise), and the whole `auth`
 * step on an Exchange (header parse + cached verify + setClaims); and, for the same tokens,
 * plain jose `jwtVerify` with the key set as a local JWKS and as an imported key, awaited one
 * after another (what our wrapper adds on a first sight is the difference).
 */
import { generateKeyPairSync } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import { createLocalJWKSet, importJWK, jwtVerify } from 'jose';
import type { JWK } from 'jose';
import { compileAuth } from '../core/auth/index.ts';
import type { AuthService } from '../core/auth/index.ts';
import { GatewayExchange } from '../core/exchange.ts';
import { createPluginContext, silentLogger } from '../core/plugin-context.ts';
import authPlugin from '../plugins/auth/index.ts';

const N = Number(process.argv[2] ?? 5000);
const RUNS = Number(process.argv[3] ?? 7);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const us = (ms: number) => `${(ms * 1000).toFixed(2).padStart(8)} µs`;

async function service(alg: 'EdDSA' | 'ES256'): Promise<AuthService> {
  const { privateKey } = alg === 'EdDSA' ? generateKeyPairSync('ed25519') : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  return compileAuth({ signingKeys: [{ kid: 'bench', alg, privateKey: { env: 'BENCH_KEY' } }] }, {
    configDir: process.cwd(), log: silentLogger, metrics: new Registry(), readSecret: () => pem,
  });
}

async function bench(alg: 'EdDSA' | 'ES256'): Promise<void> {
  const uncached: number[] = [];
  const cached: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const auth = await service(alg); // a fresh service = an empty cache
    const tokens = await Promise.all(Array.from({ length: N }, (_, i) => auth.mint({ sub: `user-${i}`, org: 'acme', plan: 'pro', features: ['fim'] })));
    let t0 = performance.now();
    for (const t of tokens) await auth.verify(t.token);
    uncached.push((performance.now() - t0) / N);
    t0 = performance.now();
    for (let k = 0; k < 20; k++) for (const t of tokens) {
      if (auth.verify(t.token) instanceof Promise) throw new Error('a cached token must be answered synchronously');
    }
    cached.push((performance.now() - t0) / (N * 20));
  }
  console.log(`${alg.padEnd(6)} uncached ${us(median(uncached))}   cached ${us(median(cached))}   (median of ${RUNS} runs × ${N} tokens)`);
  // plain jose on the same tokens, same rules (algorithm allow-list, exp/nbf checked).
  const auth = await service(alg);
  const tokens = await Promise.all(Array.from({ length: N }, (_, i) => auth.mint({ sub: `user-${i}`, org: 'acme', plan: 'pro', features: ['fim'] })));
  const jwks = auth.jwks() as { keys: JWK[] };
  const set = createLocalJWKSet(jwks);
  const key = await importJWK(jwks.keys[0]!, alg);
  const viaSet: number[] = [];
  const viaKey: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    let t0 = performance.now();
    for (const t of tokens) await jwtVerify(t.token, set, { algorithms: [alg] });
    viaSet.push((performance.now() - t0) / N);
    t0 = performance.now();
    for (const t of tokens) await jwtVerify(t.token, key, { algorithms: [alg] });
    viaKey.push((performance.now() - t0) / N);
  }
  const ours = median(uncached);
  console.log(`${alg.padEnd(6)} jose jwtVerify: local JWKS ${us(median(viaSet))} (${(median(viaSet) / ours).toFixed(2)}× ours uncached)   imported key ${us(median(viaKey))} (${(median(viaKey) / ours).toFixed(2)}×)`);
}

async function benchStep(): Promise<void> {
  const auth = await service('EdDSA');
  const step = await authPlugin.create({ optional: false }, createPluginContext({ plugin: 'auth', auth }));
  const { token } = await auth.mint({ sub: 'alice', plan: 'pro' });
  await auth.verify(token); // first sight: now cached
  const exchanges = Array.from({ length: N }, (_, i) => {
    const ex = new GatewayExchange({
      id: `b${i}`, method: 'POST', path: '/v1/completions', protocol: 'h2', ip: '127.0.0.1', headers: {},
      client: { editor: undefined, editorVersion: undefined, plugin: undefined, version: undefined },
      body: { model: 'ghost-small', prompt: 'x' }, route: { model: 'ghost-small', upstream: 'local', upstreamModel: 'ghost-small', arms: {} },
    });
    Object.defineProperty(ex, 'authorization', { value: `Bearer ${token}` });
    return ex;
  });
  const runs: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    for (const ex of exchanges) if (step.request!(ex) instanceof Promise) throw new Error('the auth step must stay synchronous for a cached token');
    runs.push((performance.now() - t0) / N);
  }
  console.log(`auth step (cached token, header parse + verify + setClaims) ${us(median(runs))}`);
}

await bench('EdDSA');
await bench('ES256');
await benchStep();
