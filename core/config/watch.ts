/**
 * Watches the config file, the policy files (and their folders, for new files) and the files the
 * config reads (secrets, key lists), and calls `onChange` once edits settle (debounced). Editors
 * that save by rename (vim, many IDEs) replace the inode, so we watch folders, not files.
 */
import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import path from 'node:path';

export class ConfigWatcher {
  #watchers = new Map<string, FSWatcher>();
  #timer: NodeJS.Timeout | undefined;
  #debounceMs: number;
  #onChange: () => void;
  #interesting: (file: string) => boolean = () => false;

  constructor(debounceMs: number, onChange: () => void) {
    this.#debounceMs = debounceMs;
    this.#onChange = onChange;
  }

  /** (Re)point the watcher at the files of the current config. */
  update(files: readonly string[], policyDirs: readonly string[], debounceMs = this.#debounceMs): void {
    this.#debounceMs = debounceMs;
    const fileSet = new Set(files.map((f) => path.resolve(f)));
    const yamlDirs = new Set(policyDirs.map((d) => path.resolve(d)));
    this.#interesting = (f) => fileSet.has(f) || (yamlDirs.has(path.dirname(f)) && /\.ya?ml$/.test(f));
    const dirs = new Set([...[...fileSet].map((f) => path.dirname(f)), ...yamlDirs]);
    for (const [d, w] of this.#watchers) if (!dirs.has(d)) { w.close(); this.#watchers.delete(d); }
    for (const d of dirs) {
      if (this.#watchers.has(d)) continue;
      try {
        const w = watch(d, { persistent: false }, (_event, name) => {
          if (name === null || this.#interesting(path.join(d, name.toString()))) this.#kick();
        });
        w.on('error', () => { w.close(); this.#watchers.delete(d); });
        this.#watchers.set(d, w);
      } catch { /* folder missing: the config reports it */ }
    }
  }

  #kick(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => { this.#timer = undefined; this.#onChange(); }, this.#debounceMs);
    this.#timer.unref();
  }

  close(): void {
    if (this.#timer) clearTimeout(this.#timer);
    for (const w of this.#watchers.values()) w.close();
    this.#watchers.clear();
  }
}
