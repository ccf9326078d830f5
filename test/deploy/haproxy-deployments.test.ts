/**
 * HAProxy in front of two gateways whose model has two deployments (#9 §4, third bullet): real
 * HAProxy on docs/deploy/haproxy.cfg, two `ghostgate start` processes, two model servers that are
 * both gateways' deployments, typing users with cancels on one HTTP/2 connection to HAProxy. One
 * model server is SIGKILLed mid-load: zero client-visible errors, apart from responses that had
 * already started from it (a byte reached the client: no failover is possible; they end with an
 * error event, never [DONE]). The model servers name themselves in `x-model-server`.
 *
 * Skipped, with a message, where haproxy is not installed (`.ci/run` installs Debian's).
 */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { spawnModelServer } from '../model-server/fixtures/spawn.ts';
import { connect, until } from '../helpers/h2.ts';
import { Instance, findHaproxy, modelStats, startHaproxy, typingLoad } from '../helpers/haproxy.ts';

async function main(haproxy: string): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-haproxy-dep-'));
  const args = ['--ttft-ms', '20', '--token-ms', '5', '--tokens', '12'];
  const x = await spawnModelServer([...args, '--name', 'x']);
  const y = await spawnModelServer([...args, '--name', 'y']);
  t.teardown(() => Promise.all([x.stop(), y.stop()]));
  const up = (n: string, url: string): string => `  ${n}: { url: ${url}, protocol: h2c, pool: { size: 2 }, forwardHeaders: [x-ttft-ms, x-token-ms, x-tokens] }`;
  const models = ['upstreams:', up('x', x.url), up('y', y.url), 'models:', '  ghost-small:', '    deployments: [{ upstream: x }, { upstream: y }]'].join('\n');
  // Health that does not vote a gateway out for the few responses cut mid-stream when x dies
  // (that is the other test file's subject): here both gateways stay in, and fail over.
  const health = '{ slo: 0.5, windowSeconds: 30, minRequests: 50 }';
  const a = new Instance('gateway A', models, path.join(dir, 'a'), health);
  const b = new Instance('gateway B', models, path.join(dir, 'b'), health);
  await Promise.all([a.start(t), b.start(t)]);
  const lb = await startHaproxy(t, haproxy, dir, a, b);
  const session = await connect(lb.url);
  let sessionEnded = '';
  session.on('close', () => { sessionEnded ||= 'closed'; });
  session.on('error', (e: Error) => { sessionEnded ||= `error ${e.message}`; });
  t.teardown(() => session.destroy());

  await t.test('one of two deployments killed under typing load with cancels, behind HAProxy: zero client-visible errors', async (t) => {
    const load = typingLoad(session, 6);
    await until(async () => (await modelStats(x)).requests >= 20 && (await modelStats(y)).requests >= 20, 60_000);
    x.child.kill('SIGKILL');
    const yBefore = (await modelStats(y)).requests;
    await until(async () => (await modelStats(y)).requests >= yBefore + 60, 60_000);
    const r = await load.stop();
    const visible = r.failures.filter((f) => f.from !== 'x');
    t.comment(`completed ${r.ok}, cancelled ${r.cancelled}; ${r.failures.length - visible.length} were streaming from x when it died`);
    t.same(visible.slice(0, 5), [], `no client error, apart from responses already streaming from the killed deployment (${visible.length})`);
    // (Through HAProxy 2.6 the gateway's RST_STREAM after the error event reaches an HTTP/2 client
    // as END_STREAM; the error event in the body is what tells it the completion is cut:
    // test/deploy/haproxy-truncation.test.ts, docs/deploy/README.md.)
    t.same(r.failures.filter((f) => !f.errorEvent), [], 'each of those carries the gateway\'s error event, never a [DONE]');
    t.ok(r.ok > 20, `served on (${r.ok} completed)`);
    t.equal(sessionEnded, '', 'the client kept its one connection to HAProxy');
  });
}

const HAPROXY = findHaproxy();
if (!HAPROXY) {
  t.plan(0, 'haproxy is not installed (Debian: apt-get install haproxy; .ci/run does): the HAProxy end-to-end tests are skipped');
} else {
  t.setTimeout(300_000);
  await main(HAPROXY);
}
