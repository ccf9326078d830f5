/**
 * Preloaded (NODE_OPTIONS `--import`) into every process a test spawns through `proc.ts`: when
 * the test process that started this one is gone (killed by tap's timeout, a crash, SIGKILL),
 * stop this process and its whole process group, so no test leaves an orphan behind.
 *
 * It watches only in the direct child (GHOSTGATE_TEST_PARENT names its parent, and is this
 * process's parent), so the child's own children (e.g. a bundled model server), which inherit the
 * preload, do not watch themselves: they are in the child's process group and go with it. The
 * environment is left as it is: a child that re-executes itself in place (process.execve, as
 * `ghostgate start` does to set the young generation's size) is still the direct child and must
 * keep watching (test/suite/hygiene.test.ts).
 */
const parent = Number(process.env.GHOSTGATE_TEST_PARENT);
if (parent > 0 && process.ppid === parent) {
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
