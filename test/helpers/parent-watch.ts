/**
 * Preloaded (NODE_OPTIONS `--import`) into every process a test spawns through `proc.ts`: when
 * the test process that started this one is gone (killed by tap's timeout, a crash, SIGKILL),
 * stop this process and its whole process group, so no test leaves an orphan behind.
 *
 * It runs only in the direct child (GHOSTGATE_TEST_PARENT names its parent) and restores
 * NODE_OPTIONS, so the child's own children (e.g. a bundled model server, or npm on the
 * machine's older Node, which cannot load this .ts file) are not watched themselves: they are in
 * the child's process group and go with it. A child that re-executes itself in place
 * (process.execve, as `ghostgate start` does to size the young generation) is still the direct
 * child: its new image gets the watch back (test/suite/hygiene.test.ts).
 */
const parent = Number(process.env.GHOSTGATE_TEST_PARENT);
if (parent > 0) {
  const own = process.env.GHOSTGATE_TEST_NODE_OPTIONS ?? '';
  delete process.env.GHOSTGATE_TEST_PARENT;
  process.env.NODE_OPTIONS = own;
  if (process.env.NODE_OPTIONS === '') delete process.env.NODE_OPTIONS;
  delete process.env.GHOSTGATE_TEST_NODE_OPTIONS;
  const execve = process.execve?.bind(process);
  if (execve) {
    process.execve = (file: string, args?: readonly string[], env: NodeJS.ProcessEnv = process.env): never => {
      const nodeOptions = env.NODE_OPTIONS ?? '';
      return execve(file, args as string[], {
        ...env,
        GHOSTGATE_TEST_PARENT: String(parent),
        GHOSTGATE_TEST_NODE_OPTIONS: nodeOptions,
        NODE_OPTIONS: `${nodeOptions} --import "${import.meta.url}"`.trim(),
      });
    };
  }
  // An orphan is re-parented (to init or a subreaper): its ppid changes. There is no event for
  // that without a channel to the parent, so look 4 times a second (an unref'd timer: it never
  // keeps the process alive, and costs nothing measurable).
  setInterval(() => {
    if (process.ppid === parent) return;
    process.stderr.write(`[test child ${process.pid}] the test process ${parent} is gone: stopping\n`);
    try { process.kill(-process.pid, 'SIGKILL'); } catch { /* not a group leader */ }
    process.exit(1);
  }, 250).unref();
}
export {};
