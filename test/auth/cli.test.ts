/** `ghostgate token` argument handling (the core's CLI calls runTokenCli). */
import t from 'tap';
import { runTokenCli } from '../../core/auth/cli.ts';
import { caught, harness } from './helpers.ts';

t.test('runTokenCli', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const auth = await h.compile({ dev: true });
  const out = { text: '', write(s: string) { this.text += s; return true; } };
  const now = Math.floor(Date.now() / 1000);

  await runTokenCli(['--sub', 'alice', '--ttl', '10m', '--claim', 'plan=pro', '--claim', 'features=["fim","chat"]', '--claim', 'beta=true', '--claim', 'note=a=b'], auth, out);
  const token = out.text.trim();
  t.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'prints the token alone');
  const c = auth.verify(token);
  t.match(c, { sub: 'alice', plan: 'pro', features: ['fim', 'chat'], beta: true, note: 'a=b' });
  t.ok((c.exp as number) - now >= 599 && (c.exp as number) - now <= 601, '--ttl 10m');

  out.text = '';
  await runTokenCli(['--sub=bob', '--json'], auth, out);
  const j = JSON.parse(out.text) as { token: string; expires_at: number };
  t.equal(auth.verify(j.token).sub, 'bob');
  t.ok(j.expires_at - now >= 1799, 'default lifetime');

  for (const [argv, re] of [
    [[], /--sub is required/],
    [['--sub', 'a', '--ttl', 'soon'], /not a duration/],
    [['--sub', 'a', '--claim', 'novalue'], /key=value/],
    [['--sub', 'a', '--claim', 'exp=1'], /set by the gateway/],
    [['--sub', 'a', '--bogus'], /Unknown option/],
    [['--sub', 'a', '--ttl', '30d'], /ttl must be/],
  ] as Array<[string[], RegExp]>) {
    const err = await caught(() => runTokenCli(argv, auth, out));
    t.match(err.message, re, argv.join(' ') || '(no args)');
  }
});
