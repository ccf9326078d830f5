/**
 * A YAML file read for config: parsed with positions kept, `${ENV}` / `${ENV:-default}`
 * interpolated in scalar strings, and able to say at which line a JSON path sits.
 */
import { readFileSync } from 'node:fs';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, visit } from 'yaml';
import type { Document, Node } from 'yaml';
import { GatewayError } from '../errors.ts';

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

export class YamlSource {
  readonly file: string;
  readonly text: string;
  readonly doc: Document;
  readonly lines: LineCounter;
  /** The environment variables each interpolated scalar read (`${NAME}`), by node. */
  readonly #envRefs = new Map<Node, string[]>();

  private constructor(file: string, text: string) {
    this.file = file;
    this.text = text;
    this.lines = new LineCounter();
    this.doc = parseDocument(text, { lineCounter: this.lines, prettyErrors: false, uniqueKeys: true });
  }

  /**
   * Read (with `readText`, the disk by default) and parse; problems go to `errors` (the caller
   * collects them all).
   */
  static read(file: string, errors: GatewayError[], env: NodeJS.ProcessEnv = process.env, readText: (file: string) => string = (f) => readFileSync(f, 'utf8')): YamlSource | undefined {
    let text: string;
    try {
      text = readText(file);
    } catch (e) {
      errors.push(new GatewayError('GW_ERR_CONFIG_READ', [file, (e as NodeJS.ErrnoException).code ?? String(e)], { location: { file } }));
      return undefined;
    }
    return YamlSource.fromText(file, text, errors, env);
  }

  static fromText(file: string, text: string, errors: GatewayError[], env: NodeJS.ProcessEnv = process.env): YamlSource | undefined {
    const src = new YamlSource(file, text);
    if (src.doc.errors.length) {
      // The first syntax error is the real one; the rest are usually its echoes.
      const e = src.doc.errors[0]!;
      const pos = src.lines.linePos(e.pos[0]);
      const line = text.split('\n')[pos.line - 1] ?? '';
      const hint = /\{[^}]*\$\{/.test(line) ? ' (inside a { } flow mapping, quote ${VAR} references: "${VAR}")' : '';
      errors.push(new GatewayError('GW_ERR_CONFIG_YAML', [e.message.split('\n')[0]! + hint], { location: { file, line: pos.line, column: pos.col } }));
      return undefined;
    }
    src.interpolate(env, errors);
    return src;
  }

  /** The plain JS value (after interpolation). */
  value(): unknown { return this.doc.toJS({ maxAliasCount: 100 }); }

  /** Where a JSON path (`/a/b/0` ajv style, or segments) sits in the file. */
  locate(path: string | ReadonlyArray<string | number>): { file: string; line?: number; column?: number; path: string } {
    const segs = typeof path === 'string' ? path.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~')) : path.map(String);
    const shown = segs.join('.');
    // Walk as deep as the document goes (a missing property is reported at its parent).
    for (let n = segs.length; n >= 0; n--) {
      const keys = segs.slice(0, n).map((s) => (/^\d+$/.test(s) ? Number(s) : s));
      const node = (n === 0 ? this.doc.contents : this.doc.getIn(keys, true)) as Node | undefined;
      if (node && node.range) {
        const pos = this.lines.linePos(node.range[0]);
        return { file: this.file, line: pos.line, column: pos.col, path: shown };
      }
    }
    return { file: this.file, path: shown };
  }

  /** The environment variables the value at `path` was interpolated from (e.g. `['GHOSTGATE_PORT']`). */
  envNames(path: ReadonlyArray<string | number>): string[] {
    const node = this.doc.getIn(path, true) as Node | undefined;
    return (node && this.#envRefs.get(node)) ?? [];
  }

  private interpolate(env: NodeJS.ProcessEnv, errors: GatewayError[]): void {
    visit(this.doc, {
      Scalar: (_key, node) => {
        if (typeof node.value !== 'string' || !node.value.includes('${')) return;
        const names: string[] = [];
        this.#envRefs.set(node, names);
        node.value = node.value.replace(ENV_REF, (_m, name: string, def: string | undefined) => {
          names.push(name);
          const v = env[name];
          if (v !== undefined && v !== '') return v;
          if (def !== undefined) return def;
          const pos = node.range ? this.lines.linePos(node.range[0]) : undefined;
          errors.push(new GatewayError('GW_ERR_CONFIG_ENV', [name], { location: { file: this.file, line: pos?.line, column: pos?.col } }));
          return '';
        });
      },
    });
  }
}

export const yamlNodeTypes = { isMap, isScalar, isSeq };
