/**
 * The rapid-reset rule of `SessionGuard` on its own, with explicit clocks: who is cut and who is
 * not. (The end-to-end attacks are in rapid-reset*.test.ts; this pins the counting itself.)
 */
import t from 'tap';
import type { Http2Session } from 'node:http2';
import { SessionGuard } from '../../core/server/client-sessions.ts';
import type { GuardContext } from '../../core/server/client-sessions.ts';

function guard(limit: number): { g: SessionGuard; cut: () => boolean } {
  let goaway = false;
  const session = {
    socket: { remoteAddress: '127.0.0.1' }, destroyed: false, closed: false,
    goaway() { goaway = true; }, destroy() { /* not reached: the timer is unref'd and the test ends first */ },
  } as unknown as Http2Session;
  const inc = { inc() { /* metric */ } };
  const ctx = {
    metrics: { clientSessionsCut: { labels: () => inc }, cancelledBeforeForward: inc },
    log: { warn() { /* log */ } },
    settings: { rapidResetLimit: limit },
  } as unknown as GuardContext;
  return { g: new SessionGuard(session, ctx), cut: () => goaway };
}

t.test('an attacker that resets every stream it opens is cut once over the limit', async (t) => {
  const { g, cut } = guard(100);
  for (let i = 0; i < 101; i++) {
    const now = i * 2;
    g.reset(now, g.opened(now));
  }
  t.ok(cut(), 'cut after 101 resets of 101 streams');
});

t.test('resets that come a window after their streams still count (a delayed attacker)', async (t) => {
  const { g, cut } = guard(100);
  const wins: number[] = [];
  for (let i = 0; i < 150; i++) wins.push(g.opened(500 + i * 3)); // window 0
  for (const w of wins) g.reset(1200, w); // arrive in window 1
  t.ok(cut(), 'cut: 150 resets of 150 streams opened in the previous window');
});

t.test('an editor population whose cancels are read late is not cut (share counted by the window of opening)', async (t) => {
  const { g, cut } = guard(100);
  // 300 streams in each of two windows; 45% of them are cancelled before any response, but a busy
  // process reads those cancels only in the third window, where few new streams open.
  const w0 = Array.from({ length: 300 }, (_, i) => g.opened(i * 3));
  const w1 = Array.from({ length: 300 }, (_, i) => g.opened(1000 + i * 3));
  for (let i = 0; i < 50; i++) g.opened(2000 + i);
  for (let i = 0; i < 135; i++) g.reset(2050, w0[i]!);
  for (let i = 0; i < 135; i++) g.reset(2060, w1[i]!);
  t.notOk(cut(), '45% cancels, read a window late, never cut');
});
