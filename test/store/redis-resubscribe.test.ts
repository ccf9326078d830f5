/**
 * ioredis resubscribes by itself after a reconnect (and re-selects the db), and nothing catches
 * those commands' promises: a connection that drops again before Redis answers them rejects them
 * unhandled, and Node 24 ends the process on an unhandled rejection. A Redis that restarts or
 * flaps must not take the gateway down with it (core/store/redis.ts catches them).
 *
 * Without it, the subscription was also lost for good: ioredis resubscribes only to channels whose
 * SUBSCRIBE was answered.
 *
 * A real redis-server cannot be made to drop a connection at exactly that command, so this test
 * speaks just enough RESP itself: it answers the handshake and SUBSCRIBE on every connection, and
 * once the subscriber has come back after one drop, it closes the connection again as soon as
 * the resubscription arrives.
 */
import net from 'node:net';
import t from 'tap';
import { Registry } from 'prom-client';
import { RedisStore } from '../../core/store/redis.ts';
import { waitFor } from '../helpers/h2.ts';

const noopLog = { info() {}, warn() {}, error() {}, debug() {} };

/** RESP commands in `buf` (arrays of bulk strings), and how many bytes they took. */
function parse(buf: Buffer): { cmds: string[][]; used: number } {
  const cmds: string[][] = [];
  let i = 0;
  for (;;) {
    const start = i;
    const line = (): string | undefined => {
      const e = buf.indexOf('\r\n', i);
      if (e < 0) return undefined;
      const s = buf.toString('latin1', i, e);
      i = e + 2;
      return s;
    };
    const head = line();
    if (head === undefined || head[0] !== '*') { i = start; break; }
    const args: string[] = [];
    let ok = true;
    for (let n = Number(head.slice(1)); n > 0; n--) {
      const len = line();
      if (len === undefined || i + Number(len.slice(1)) + 2 > buf.length) { ok = false; break; }
      args.push(buf.toString('utf8', i, i + Number(len.slice(1))));
      i += Number(len.slice(1)) + 2;
    }
    if (!ok) { i = start; break; }
    cmds.push(args);
  }
  return { cmds, used: i };
}

const bulk = (s: string): string => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;

t.test('the subscriber connection dropping while it resubscribes is no unhandled rejection', async (t) => {
  const rejections: unknown[] = [];
  const onRejection = (e: unknown): void => { rejections.push(e); };
  process.on('unhandledRejection', onRejection);
  t.teardown(() => { process.off('unhandledRejection', onRejection); });

  let subscribes = 0;
  let subscriber: net.Socket | undefined;
  let channel = '';
  let dropAtResubscribe = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const { cmds, used } = parse(buf);
      buf = buf.subarray(used);
      for (const [name, ...args] of cmds) {
        const cmd = name!.toLowerCase();
        if (cmd === 'info') s.write(bulk('# Server\r\nredis_version:7.0.0\r\nloading:0\r\n'));
        else if (cmd === 'subscribe') {
          subscribes++;
          if (dropAtResubscribe) { s.destroy(); return; }
          subscriber = s;
          channel = args[0]!;
          for (const [k, ch] of args.entries()) s.write(`*3\r\n${bulk('subscribe')}${bulk(ch)}:${k + 1}\r\n`);
        } else if (cmd === 'ping') s.write('+PONG\r\n');
        else s.write('+OK\r\n'); // HELLO 3 (ioredis 6 speaks RESP3: pushes start with '>'), CLIENT, SELECT
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => { for (const s of sockets) s.destroy(); server.close(); });
  const port = (server.address() as net.AddressInfo).port;

  // db 3: the reconnect re-selects it too (another command nothing catches).
  const store = new RedisStore({ url: `redis://127.0.0.1:${port}/3`, timeoutMs: 200, retryMs: 20, keyPrefix: 'gg-test:' }, noopLog, new Registry());
  t.teardown(() => store.close());
  const heard: string[] = [];
  store.onSuperseded((token) => heard.push(token));
  await waitFor('the first subscription', () => subscribes === 1);
  dropAtResubscribe = true;
  for (const s of sockets) s.destroy(); // both connections drop; they reconnect and resubscribe
  await waitFor('the resubscription, dropped', () => subscribes >= 2);
  dropAtResubscribe = false; // next time it is answered
  await waitFor('a resubscription that is answered', () => subscribes >= 3, 20_000);
  // Rejections surface after the microtask queue drains; the answered subscription came later.
  await new Promise((resolve) => setImmediate(resolve));
  t.same(rejections.map(String), [], 'no unhandled rejection');
  subscriber!.write(`>3\r\n${bulk('message')}${bulk(channel)}${bulk('peer 7')}`);
  await waitFor('the supersede message to arrive', () => heard.length === 1);
  t.same(heard, ['peer 7'], 'the process hears supersedes again: subscribed on the new connection');
});
