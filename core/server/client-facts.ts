/** The client's editor and extension versions, from headers like `editor-version: vscode/1.95.0`. */
import type { IncomingHttpHeaders } from 'node:http';
import type { Facts } from '../types.ts';

const NONE: Facts['client'] = Object.freeze({ editor: undefined, editorVersion: undefined, plugin: undefined, version: undefined });

export function clientFacts(h: IncomingHttpHeaders, names: { editorHeader: string; pluginHeader: string }): Facts['client'] {
  const e = h[names.editorHeader];
  const p = h[names.pluginHeader];
  if (typeof e !== 'string' && typeof p !== 'string') return NONE;
  const [editor, editorVersion] = split(e);
  const [plugin, version] = split(p);
  return { editor, editorVersion, plugin, version };
}

/** `name/1.2.3` → [name, 1.2.3]; a bare `1.2.3` → [undefined, 1.2.3]. Bounded lengths. */
function split(v: string | string[] | undefined): [string | undefined, string | undefined] {
  if (typeof v !== 'string' || v.length > 256) return [undefined, undefined];
  const i = v.indexOf('/');
  if (i === -1) return [undefined, v.trim() || undefined];
  return [v.slice(0, i).trim().toLowerCase() || undefined, v.slice(i + 1).trim() || undefined];
}
