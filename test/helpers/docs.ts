/**
 * Code blocks of the docs, for tests that run what a page shows (so the page cannot rot).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './proc.ts';

/** The ```lang blocks of `doc` (relative to the repository) that come after `after`, up to `until`. */
export function docBlocks(doc: string, lang: string, after: string, until?: string): string[] {
  const md = readFileSync(path.join(ROOT, doc), 'utf8');
  const from = md.indexOf(after);
  if (from < 0) throw new Error(`${doc} has no "${after}"`);
  const to = until === undefined ? md.length : md.indexOf(until, from);
  const section = md.slice(from, to < 0 ? md.length : to);
  const open = '```' + lang + '\n';
  const blocks: string[] = [];
  for (let i = section.indexOf(open); i >= 0; i = section.indexOf(open, i + 1)) {
    blocks.push(section.slice(i + open.length, section.indexOf('\n```', i + open.length) + 1));
  }
  return blocks;
}
