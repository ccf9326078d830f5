/**
 * The deny list: subjects (no new tokens, live tokens refused) and token ids (one leaked token).
 * Inline lists and an optional file are merged at every load, so a reload applies an edit.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { authConfigError } from './config.ts';
import type { AuthConfig } from './config.ts';

export class Revocation {
  readonly subjects: ReadonlySet<string>;
  readonly tokenIds: ReadonlySet<string>;
  /** False when both lists are empty: the hot path skips the lookups. */
  readonly active: boolean;

  constructor(subjects: Iterable<string>, tokenIds: Iterable<string>) {
    this.subjects = new Set(subjects);
    this.tokenIds = new Set(tokenIds);
    this.active = this.subjects.size > 0 || this.tokenIds.size > 0;
  }

  has(sub: string | undefined, jti: string | undefined): boolean {
    if (!this.active) return false;
    return (sub !== undefined && this.subjects.has(sub)) || (jti !== undefined && this.tokenIds.has(jti));
  }
}

function stringList(v: unknown, where: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string' || s === '')) throw authConfigError(where, 'must be a list of non-empty strings');
  return v as string[];
}

/** Build the deny list; the file (relative to `configDir`) must exist if named. Returns the file path read, if any. */
export function loadRevocation(cfg: AuthConfig['revocation'], configDir: string): { revocation: Revocation; file: string | undefined } {
  const subjects = [...cfg.subjects];
  const tokenIds = [...cfg.tokenIds];
  let file: string | undefined;
  if (cfg.file) {
    file = resolve(configDir, cfg.file);
    let doc: unknown;
    try {
      doc = parseYaml(readFileSync(file, 'utf8'));
    } catch (e) {
      throw authConfigError('revocation.file', `cannot read ${cfg.file}: ${(e as NodeJS.ErrnoException).code ?? 'invalid YAML/JSON'}`);
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== 'object' || Array.isArray(doc)) throw authConfigError('revocation.file', `${cfg.file} must hold {subjects: [...], tokenIds: [...]}`);
      const { subjects: s, tokenIds: t, ...rest } = doc as Record<string, unknown>;
      const extra = Object.keys(rest);
      if (extra.length) throw authConfigError('revocation.file', `${cfg.file}: unknown key "${extra[0]}" (expected subjects, tokenIds)`);
      subjects.push(...stringList(s, `revocation.file(${cfg.file}).subjects`));
      tokenIds.push(...stringList(t, `revocation.file(${cfg.file}).tokenIds`));
    }
  }
  return { revocation: new Revocation(subjects, tokenIds), file };
}
