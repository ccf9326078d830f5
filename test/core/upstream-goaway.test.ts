/**
 * An upstream that sends GOAWAY with a last stream id below streams in flight, and does not
 * refuse them (RFC 9113 §6.8: streams above it were not processed and may be retried): the
 * gateway retries those streams on a new session and every request succeeds. The stream at or
 * below the last stream id is left to finish on the draining session.
 */
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post, until } from '../helpers/h2.ts';
import { startRawH2, upstreamYaml } from '../helpers/raw-h2-upstream.ts';
import type { RawH2Conn } from '../helpers/raw-h2-upstream.ts';

const BODY = { model: 'ghost-small', prompt: 'x', stream: true };

t.test('GOAWAY below streams in flight, no RST_STREAM: those streams are retried on a new session and succeed', async (t) => {
  let conns: RawH2Conn[] = [];
  const first: number[] = [];
  const served: Array<{ conn: number; id: number }> = [];
  const up = await startRawH2(t, {
    onRequest: (c, id) => {
      const conn = conns.indexOf(c);
      if (conn > 0) { served.push({ conn, id }); c.complete(id); return; }
      // First session: hold the first three streams, then GOAWAY naming only the first as
      // processed; answer that one and never answer or reset the other two.
      first.push(id);
      if (first.length < 3) return;
      c.goaway(first[0]!);
      served.push({ conn, id: first[0]! });
      c.complete(first[0]!);
    },
  });
  conns = up.conns;
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => upstreamYaml(up.url, 'h2c', { pool: '{ size: 1 }' }) });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const p1 = post(s, '/v1/completions', BODY);
  await until(() => first.length === 1);
  const p2 = post(s, '/v1/completions', BODY);
  await until(() => first.length === 2);
  const p3 = post(s, '/v1/completions', BODY);
  const rs = await Promise.all([p1, p2, p3]);
  for (const [i, r] of rs.entries()) {
    t.equal(r.status, 200, `request ${i + 1}: 200 (${r.text.slice(0, 120)})`);
    t.equal(r.events.at(-1), '[DONE]', `request ${i + 1}: a whole completion`);
  }
  t.same(first.length, 3, 'three streams reached the first session');
  t.same(served.filter((x) => x.conn === 0).map((x) => x.id), [first[0]], 'the stream at the last stream id finished on the draining session');
  t.equal(served.filter((x) => x.conn > 0).length, 2, 'the two above it were sent again, on a new session');
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  const retries = Number(/^ghostgate_upstream_retries_total\{upstream="local",reason="goaway"\} (\d+)$/m.exec(text)?.[1] ?? 0);
  t.equal(retries, 2, `both counted as GOAWAY retries (${text.match(/^ghostgate_upstream_retries_total.*$/gm)?.join("; ")})`);
  t.match(text, /^ghostgate_upstream_goaways_total\{upstream="local"\} 1$/m);
});
