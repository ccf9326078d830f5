/**
 * The least an HTTP/2 proxy written on Node can do: an h2c server that relays each stream to one
 * upstream HTTP/2 session and pipes the answer back, with nothing in between (no auth, no
 * policies, no metrics, no SSE checks). A client reset resets the upstream stream, as the gateway
 * does, so typing users with cancels cost the model the same on both.
 *
 *   node bench/null-proxy.ts --port P --upstream http://127.0.0.1:M
 *
 * It prints `{"event":"listening","port":P}` once it listens and its upstream session is up.
 * bench/run.ts's `floor` section puts typing users through it beside the gateway and HAProxy, to
 * show what any proxy hop costs on the machine the bench runs on (two more loopback hops, one more
 * process to wake): the part of the gateway's overhead that is not the gateway's work.
 */
import http2 from 'node:http2';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string' }, upstream: { type: 'string' } } });
if (values.port === undefined || values.upstream === undefined) {
  process.stderr.write('usage: node bench/null-proxy.ts --port P --upstream http://host:port\n');
  process.exit(2);
}
const UPSTREAM = values.upstream;
const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR } = http2.constants;
/** Request headers relayed as they came (the pseudo-headers are rebuilt; hop-by-hop ones cannot occur in HTTP/2). */
const PASS = ['content-type', 'content-length', 'authorization', 'accept', 'x-request-id'];

let session: http2.ClientHttp2Session | undefined;
function upstream(): http2.ClientHttp2Session {
  if (session === undefined || session.closed || session.destroyed) {
    const s = http2.connect(UPSTREAM);
    s.on('error', () => {});
    s.once('close', () => { if (session === s) session = undefined; });
    // A GOAWAY: new streams go to a new session; the old one finishes its own.
    s.once('goaway', () => { if (session === s) session = undefined; });
    session = s;
  }
  return session;
}

const server = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
server.on('stream', (client, headers) => {
  const h: http2.OutgoingHttpHeaders = { ':method': headers[':method'], ':path': headers[':path'] };
  for (const k of PASS) if (headers[k] !== undefined) h[k] = headers[k];
  const up = upstream().request(h);
  client.pipe(up);
  up.on('response', (rh) => {
    if (client.destroyed) return;
    client.respond({ ':status': rh[':status'], 'content-type': rh['content-type'] ?? 'application/octet-stream' });
    up.pipe(client);
  });
  up.on('error', () => {});
  client.on('error', () => {});
  // The upstream ended abnormally: reset the client (never a clean end on a cut answer).
  up.on('close', () => { if (up.rstCode !== undefined && up.rstCode !== 0 && !client.destroyed) client.close(NGHTTP2_INTERNAL_ERROR); });
  // The client reset or went away: reset the upstream stream at once.
  client.on('close', () => { if (!up.closed) up.close(NGHTTP2_CANCEL); });
});
server.on('sessionError', () => {});

const port = Number(values.port);
const s = upstream();
await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('error', reject); });
server.listen(port, '127.0.0.1', () => { process.stdout.write(`${JSON.stringify({ event: 'listening', port })}\n`); });
process.on('SIGTERM', () => { server.close(); session?.close(); setTimeout(() => process.exit(0), 200).unref(); });
