/**
 * The primary's side of the worker channel (core/cluster/ipc.ts, Rpc) against a real child
 * process whose IPC channel has closed while it keeps running: a call fails at once with a code,
 * without an 'error' event on the child (unheard, one ends the primary) and without waiting for
 * its timeout. In a cluster the primary usually sees the channel close first (it then asks
 * nothing: test/cluster/channel.test.ts); this is the send that comes before that event.
 */
import t from 'tap';
import { Rpc } from '../../core/cluster/ipc.ts';
import { GatewayError } from '../../core/errors.ts';
import { NODE_BIN, spawnTracked, stopTracked } from '../helpers/proc.ts';

/** Closes its channel at once and stays alive until killed. */
const CHILD = "process.disconnect(); setInterval(() => {}, 60_000);";

t.test('a call to a process whose channel closed fails at once with GW_ERR_CLUSTER_WORKER, and no error event', async (t) => {
  const child = spawnTracked(NODE_BIN, ['-e', CHILD], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  t.teardown(() => stopTracked(child, 0, 'SIGKILL'));
  const errors: Error[] = [];
  child.on('error', (e) => errors.push(e));
  await new Promise<void>((r) => child.once('disconnect', () => r()));
  t.equal(child.exitCode, null, 'the child is still running');
  const rpc = new Rpc(3, (m, sent) => child.send(m, sent));
  // A timeout far beyond the test's own: the rejection must come from the failed send.
  const err = await rpc.call('health', undefined, 3_600_000).then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof GatewayError, 'a GatewayError');
  t.match(err, { code: 'GW_ERR_CLUSTER_WORKER', message: 'Worker 3 did not answer: "health" not sent: ERR_IPC_CHANNEL_CLOSED' });
  t.same(errors, [], 'no error event on the child');
});

t.test('calls still waiting when the worker goes away fail with a code', async (t) => {
  const rpc = new Rpc(2, () => { /* sent, never answered */ });
  const waiting = rpc.call('info', undefined, 3_600_000).then(() => undefined, (e: unknown) => e);
  rpc.close('it exited');
  t.match(await waiting, { code: 'GW_ERR_CLUSTER_WORKER', message: 'Worker 2 did not answer: it exited' });
});
