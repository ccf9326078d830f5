/**
 * Closed-loop completion clients for the small benchmarks (lane-cpu.ts, gc-survival.ts): `n`
 * requests with `inFlight` at a time and no think time, each POST /v1/completions with `body`;
 * a status other than 200 rejects.
 */
import http from 'node:http';
import http2 from 'node:http2';

/**
 * HTTP/2: `inFlight` streams at a time over `sessions` sessions (round robin). `ttfb`, if given,
 * gets each request's milliseconds from sending its headers to the response headers.
 */
export async function h2ClosedLoop(url: string, n: number, body: string, inFlight: number, sessions = 1, ttfb?: number[]): Promise<void> {
  const ss = await Promise.all(Array.from({ length: sessions }, () => new Promise<http2.ClientHttp2Session>((resolve, reject) => {
    const s = http2.connect(url);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  })));
  let next = 0;
  const one = (s: http2.ClientHttp2Session): Promise<void> => new Promise((resolve, reject) => {
    const t0 = performance.now();
    const st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' });
    st.on('response', (h) => { ttfb?.push(performance.now() - t0); if (h[':status'] !== 200) reject(new Error(`status ${h[':status']}`)); });
    st.resume();
    st.on('close', () => resolve());
    st.end(body);
  });
  try {
    await Promise.all(Array.from({ length: inFlight }, async (_, i) => { while (next++ < n) await one(ss[i % sessions]!); }));
  } finally {
    for (const s of ss) s.close();
  }
}

/** HTTP/1.1 keep-alive: `inFlight` sockets, one request at a time on each. */
export async function h1ClosedLoop(url: string, n: number, body: string, inFlight: number): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: inFlight });
  let next = 0;
  const one = (): Promise<void> => new Promise((resolve, reject) => {
    const req = http.request(`${url}/v1/completions`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
      res.resume();
      res.on('end', () => resolve());
    });
    req.on('error', reject);
    req.end(body);
  });
  try {
    await Promise.all(Array.from({ length: inFlight }, async () => { while (next++ < n) await one(); }));
  } finally {
    agent.destroy();
  }
}
