/**
 * The minimal stand-in the e2e check measures ghostgate against: it answers every call of the
 * Copilot language server at once (token, user, models, experiments, and a completion of one
 * SSE chunk), with no policy, no upstream and no auth check. Same listeners as the gateway: TLS
 * (ALPN h2, falling back to HTTP/1.1) and cleartext HTTP/1.1.
 */
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';

/**
 * The same 9 pieces the bundled model sends in the e2e run (model-server/server.ts), one word
 * changed: the client post-processes both alike, and the check tells them apart.
 */
export const STAND_IN_PIECES = ['def', ' standin', '(n', ':', ' int', ')', ' ->', ' int', ':'];
export const STAND_IN_TEXT = STAND_IN_PIECES.join('');

export interface StandIn {
  tlsUrl: string;
  url: string;
  /** Completion request bodies and headers, in arrival order. */
  completions: Array<{ headers: Record<string, unknown>; body: Record<string, unknown> }>;
  close(): Promise<void>;
}

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

export async function startStandIn(tls: { key: string; cert: string }): Promise<StandIn> {
  const completions: StandIn['completions'] = [];
  let seq = 0;
  const handler = (req: Req, res: Res): void => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = (req.url ?? '').split('?')[0]!;
      const base = (origin: string): Record<string, string> => ({ api: origin, proxy: origin, telemetry: origin, 'origin-tracker': origin });
      const json = (status: number, body: unknown): void => {
        (res as http.ServerResponse).writeHead(status, { 'content-type': 'application/json', 'x-github-request-id': `s-${++seq}` });
        res.end(JSON.stringify(body));
      };
      if (path === '/copilot_internal/v2/token') {
        const tlsOn = (req.socket as { encrypted?: boolean }).encrypted === true;
        const origin = `${tlsOn ? 'https' : 'http'}://${req.headers[':authority'] ?? req.headers.host}`;
        const now = Math.floor(Date.now() / 1000);
        return json(200, { token: 'stand-in-token', expires_at: now + 1800, refresh_in: 1500, endpoints: base(origin), telemetry: 'disabled', sku: 'stand-in' });
      }
      if (path === '/telemetry' && req.method === 'GET') return json(200, { Configs: [{ Id: 'vscode', Parameters: {} }], AssignmentContext: '' });
      if (path === '/models') return json(200, { object: 'list', data: [], models: [] });
      if (path === '/_count') return json(200, { completions: completions.length });
      if (req.method === 'POST' && /^\/v1\/engines\/[^/]+\/completions$/.test(path)) {
        let body: Record<string, unknown> = {};
        try { body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>; } catch { /* recorded empty */ }
        completions.push({ headers: { ...req.headers }, body });
        (res as http.ServerResponse).writeHead(200, { 'content-type': 'text/event-stream', 'x-github-request-id': `s-${++seq}` });
        // As many SSE events as the bundled model sends in the e2e run, at once.
        const words = STAND_IN_PIECES;
        const ev = (text: string, last: boolean): string => `data: {"id":"c${seq}","created":0,"choices":[{"text":${JSON.stringify(text)},"index":0,"finish_reason":${last ? '"stop"' : 'null'},"logprobs":null}]}\n\n`;
        res.end(words.map((w, i) => ev(w, i === words.length - 1)).join('') + 'data: [DONE]\n\n');
        return;
      }
      return json(404, { message: 'Not Found' });
    });
  };
  const secure = http2.createSecureServer({ key: tls.key, cert: tls.cert, allowHTTP1: true, ALPNProtocols: ['h2', 'http/1.1'] }, handler);
  const plain = http.createServer(handler);
  plain.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => secure.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
  return {
    tlsUrl: `https://localhost:${(secure.address() as AddressInfo).port}`,
    url: `http://127.0.0.1:${(plain.address() as AddressInfo).port}`,
    completions,
    async close() {
      plain.closeAllConnections();
      await Promise.all([new Promise((r) => secure.close(r)), new Promise((r) => plain.close(r))]);
    },
  };
}
