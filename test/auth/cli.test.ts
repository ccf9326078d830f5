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

  const err = { text: '', write(s: string) { this.text += s; return true; } };
  await runTokenCli(['--sub', 'alice', '--ttl', '10m', '--claim', 'plan=pro', '--claim', 'features=["fim","chat"]', '--claim', 'beta=true', '--claim', 'note=a=b'], auth, out, err);
  t.match(err.text, /ephemeral key/, 'warns that a dev-key token is useless to a running gateway');
  const token = out.text.trim();
  t.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'prints the token alone');
  const c = await auth.verify(token);
  t.match(c, { sub: 'alice', plan: 'pro', features: ['fim', 'chat'], beta: true, note: 'a=b' });
  t.ok((c.exp as number) - now >= 599 && (c.exp as number) - now <= 601, '--ttl 10m');

  out.text = '';
  await runTokenCli(['--sub=bob', '--json'], auth, out, err);
  const j = JSON.parse(out.text) as { token: string; expires_at: number };
  t.equal((await auth.verify(j.token)).sub, 'bob');
  t.ok(j.expires_at - now >= 1799, 'default lifetime');

  for (const [argv, re] of [
    [[], /--sub is required/],
    [['--sub', 'a', '--ttl', 'soon'], /not a duration/],
    [['--sub', 'a', '--claim', 'novalue'], /key=value/],
    [['--sub', 'a', '--claim', 'exp=1'], /set by the gateway/],
    [['--sub', 'a', '--bogus'], /Unknown option/],
    [['--sub', 'a', '--ttl', '30d'], /ttl must be/],
  ] as Array<[string[], RegExp]>) {
    const e = await caught(() => runTokenCli(argv, auth, out, err));
    t.match(e.message, re, argv.join(' ') || '(no args)');
  }
});

t.test('no warning with a configured key', async (t) => {
  const { makeKey, signingEntry } = await import('./helpers.ts');
  const h = harness();
  t.teardown(() => h.dir.remove());
  const auth = await h.compile({ signingKeys: [signingEntry(h, await makeKey('k1'))] });
  t.equal(auth.ephemeral, false);
  const out = { text: '', write(s: string) { this.text += s; return true; } };
  const err = { text: '', write(s: string) { this.text += s; return true; } };
  await runTokenCli(['--sub', 'a'], auth, out, err);
  t.equal(err.text, '');
  t.ok(await auth.verify(out.text.trim()));
});
