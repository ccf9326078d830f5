/**
 * Usage errors of the CLI: an unknown command, or an unknown option of any command, is exit 2
 * with a line on stderr that says what was wrong (then the usage where there is one); never a
 * stack trace, never exit 0.
 */
import t from 'tap';
import { startCli } from './run.ts';

t.test('an unknown command: named on stderr, then the usage; exit 2', async (t) => {
  for (const cmd of ['nope', 'constructor']) {
    const p = startCli(t, [cmd]);
    t.equal(await p.exited, 2, `${cmd}: exit 2`);
    t.equal(p.stdout(), '', `${cmd}: nothing on stdout`);
    t.match(p.stderr(), new RegExp(`^ghostgate: unknown command "${cmd}"\\nUsage: ghostgate <command>`), `${cmd}: says so, then the usage`);
  }
  const help = startCli(t, ['--help']);
  t.equal(await help.exited, 0, '--help: exit 0');
  t.match(help.stdout(), /^Usage: ghostgate <command>/, '--help: the usage on stdout');
});

t.test('an unknown option of every command: one line naming it, exit 2, no stack trace', async (t) => {
  const cmds = ['start', 'validate', 'token', 'apikey new', 'explain', 'schema', 'plugins', 'model-server'];
  // Side by side: each is a process of its own, and none starts anything before its options parse.
  const runs = cmds.map((c) => ({ c, p: startCli(t, [...c.split(' '), '--bogus']) }));
  for (const { c, p } of runs) {
    t.equal(await p.exited, 2, `${c}: exit 2`);
    const [first] = p.stderr().split('\n');
    t.match(first, new RegExp(`^ghostgate ${c.split(' ')[0]}: .*Unknown option '--bogus'`), `${c}: names the option`);
    t.notMatch(p.stderr(), /\n\s+at /, `${c}: no stack trace`);
  }
});
