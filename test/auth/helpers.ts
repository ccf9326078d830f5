/**
 * Auth test kit: real keys generated per test (jose), written to a temp config dir as the
 * operator would (PEM PKCS8, JWK JSON), a readSecret like the core's, and a logger that records
 * every line so tests can grep it.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { exportJWK, exportPKCS8, exportSPKI, generateKeyPair } from 'jose';
import { Registry } from 'prom-client';
import { GatewayError } from '../../core/errors.ts';
import type { Logger } from '../../core/types.ts';
import { compileAuth } from '../../core/auth/index.ts';
import type { AuthDeps, AuthService } from '../../core/auth/index.ts';

type JoseKeyPair = Awaited<ReturnType<typeof generateKeyPair>>;

export interface TestKey {
  kid: string;
  alg: 'EdDSA' | 'ES256';
  /** The secrets as written (to grep for leaks). */
  privatePem: string;
  privateJwk: Record<string, unknown>;
  publicPem: string;
  publicJwk: Record<string, unknown>;
  privateKey: JoseKeyPair['privateKey'];
  publicKey: JoseKeyPair['publicKey'];
}

export async function makeKey(kid: string, alg: 'EdDSA' | 'ES256' = 'EdDSA'): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return {
    kid, alg, privateKey, publicKey,
    privatePem: await exportPKCS8(privateKey),
    privateJwk: await exportJWK(privateKey) as Record<string, unknown>,
    publicPem: await exportSPKI(publicKey),
    publicJwk: await exportJWK(publicKey) as Record<string, unknown>,
  };
}

export interface LogLine { level: string; obj: unknown; msg: string | undefined }

export function captureLogger(): Logger & { lines: LogLine[]; text(): string } {
  const lines: LogLine[] = [];
  const rec = (level: string) => (obj: object | string, msg?: string) => { lines.push({ level, obj, msg }); };
  return {
    lines,
    info: rec('info'), warn: rec('warn'), error: rec('error'), debug: rec('debug'),
    text: () => lines.map((l) => JSON.stringify(l)).join('\n'),
  };
}

/** A config dir in tmp with helpers to write files into it. */
export class ConfigDir {
  readonly dir = mkdtempSync(join(tmpdir(), 'gg-auth-'));
  write(name: string, content: string | object): string {
    writeFileSync(join(this.dir, name), typeof content === 'string' ? content : JSON.stringify(content));
    return name;
  }
  remove(): void { rmSync(this.dir, { recursive: true, force: true }); }
}

/** Like the core's secret reader: env or file relative to configDir, coded errors naming only the source. */
export function readSecretIn(configDir: string) {
  return (ref: { env: string } | { file: string }): string => {
    if ('env' in ref) {
      const v = process.env[ref.env];
      if (!v) throw new GatewayError('GW_ERR_CONFIG_SECRET', [`env ${ref.env}`, 'the variable is not set']);
      return v;
    }
    try {
      return readFileSync(resolve(configDir, ref.file), 'utf8');
    } catch (e) {
      throw new GatewayError('GW_ERR_CONFIG_SECRET', [`file ${ref.file}`, (e as NodeJS.ErrnoException).code ?? 'unreadable']);
    }
  };
}

export interface Harness {
  dir: ConfigDir;
  log: ReturnType<typeof captureLogger>;
  metrics: Registry;
  clock: { ms: number | undefined };
  deps: AuthDeps;
  compile(config: Record<string, unknown>, previous?: AuthService): Promise<AuthService>;
  /** Value of ghostgate_auth_failures_total{code}. */
  failures(code: string): Promise<number>;
}

export function harness(): Harness {
  const dir = new ConfigDir();
  const log = captureLogger();
  const metrics = new Registry();
  const clock: { ms: number | undefined } = { ms: undefined };
  const deps: AuthDeps = { configDir: dir.dir, log, metrics, readSecret: readSecretIn(dir.dir), now: () => clock.ms ?? Date.now() };
  return {
    dir, log, metrics, clock, deps,
    compile: (config, previous) => compileAuth(config, deps, previous),
    async failures(code) {
      const m = await metrics.getSingleMetric('ghostgate_auth_failures_total')?.get();
      return m?.values.find((v) => v.labels.code === code)?.value ?? 0;
    },
  };
}

/** Write a key's private PEM (or JWK) into the dir; returns the signingKeys entry. */
export function signingEntry(h: Harness, k: TestKey, o: { active?: boolean; form?: 'pem' | 'jwk'; publicOnly?: boolean } = {}): Record<string, unknown> {
  if (o.publicOnly) {
    const f = h.dir.write(`${k.kid}.pub.${o.form === 'pem' ? 'pem' : 'jwk'}`, o.form === 'pem' ? k.publicPem : { ...k.publicJwk, kid: k.kid });
    return { kid: k.kid, alg: k.alg, publicKey: { file: f } };
  }
  const f = h.dir.write(`${k.kid}.${o.form === 'jwk' ? 'jwk' : 'pem'}`, o.form === 'jwk' ? k.privateJwk : k.privatePem);
  return { kid: k.kid, alg: k.alg, privateKey: { file: f }, ...(o.active ? { active: true } : {}) };
}

/** Assert-friendly: run fn, return the GatewayError it threw (or fail). */
export async function caught(fn: () => unknown): Promise<GatewayError> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof GatewayError) return e;
    throw e;
  }
  throw new Error('expected a GatewayError, nothing was thrown');
}
