/**
 * Unfinished request bodies cannot fill the gateway's memory: bytes of bodies being received are
 * capped per client address (`limits.bodyBufferBytesPerClientIp`) and in total
 * (`limits.bodyBufferBytes`), against a gateway process, measured by its resident memory.
 */
import http from 'node:http';
import http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import t from 'tap';
import type { Test } from 'tap';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { connect, post, waitFor, within } from '../helpers/h2.ts';

const MiB = 1024 * 1024;
/** A prompt that, with what 8 held bodies leave of an 8 MiB cap (8 KiB), would pass it if they were not given back. */
const PROMPT_64K = 'x'.repeat(64 * 1024);
const rssMiB = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

interface Attack { statuses: number[]; codes: string[]; sessions: ClientHttp2Session[] }

/** `conns` connections from `address`, `streams` streams each, each sending `perStream` bytes of body and never ending it. */
async function attack(t: Test, url: string, address: string, conns: number, streams: number, perStream: number): Promise<Attack> {
  const u = new URL(url);
  const chunk = Buffer.alloc(perStream, 0x61);
  const sessions: ClientHttp2Session[] = [];
  const out: Attack = { statuses: [], codes: [], sessions };
  t.teardown(() => { for (const s of sessions) s.destroy(); });
  for (let c = 0; c < conns; c++) {
    // The client's own session memory must hold what it queues (Node's default, 10 MB, does not).
    const s = await connect(url, { peerMaxConcurrentStreams: 1000, maxSessionMemory: 1024, createConnection: () => net.connect({ port: Number(u.port), host: u.hostname, localAddress: address }) } as http2.SecureClientSessionOptions);
    s.on('error', () => { /* cut off */ });
    sessions.push(s);
    for (let i = 0; i < streams; i++) {
      const st: ClientHttp2Stream = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' });
      st.on('error', () => { /* reset */ });
      let text = '';
      st.on('response', (h) => out.statuses.push(Number(h[':status'])));
      st.setEncoding('utf8');
      st.on('data', (d: string) => { text += d; });
      st.on('end', () => { out.codes.push(/"code":"(\w+)"/.exec(text)?.[1] ?? `no code: ${text}`); });
      st.write(chunk);
    }
  }
  return out;
}

t.test('unfinished bodies from one address are capped; the rest get a coded 429; another address is served', async (t) => {
  const g = await startGatewayProcess(t, { extraConfig: 'limits: { bodyBufferBytesPerClientIp: 8388608, bodyBufferBytes: 33554432 }' });
  const pid = g.child.pid!;
  const before = rssMiB(pid);
  // 2 connections x 100 streams, each sending 1 MiB less 1 KiB of body (under limits.bodyBytes) and never ending it: 200 MiB.
  const a = await attack(t, g.url, '127.0.0.3', 2, 100, MiB - 1024);
  // About 8 MiB of them is kept (a few streams); every other stream is refused.
  await waitFor('the attacker\'s streams over the cap to be refused', () => a.codes.length >= 180, 60_000);
  t.same([...new Set(a.statuses)], [429], 'each refusal is a 429');
  t.same([...new Set(a.codes)], ['GW_ERR_REQ_TOO_MANY_IN_FLIGHT'], 'with GW_ERR_REQ_TOO_MANY_IN_FLIGHT');
  const grew = rssMiB(pid) - before;
  t.comment(`gateway RSS grew ${grew.toFixed(0)} MiB for 200 MiB of unfinished bodies (${a.codes.length} refused)`);
  t.ok(grew < 100, `the gateway's memory stays bounded (grew ${grew.toFixed(0)} MiB)`);
  const b = await connect(g.url);
  t.teardown(() => b.close());
  const r = await within('a bystander', post(b, '/v1/completions', { model: 'ghost-small', prompt: 'by', stream: true }), 30_000);
  t.equal(r.status, 200, 'another address is served meanwhile');
});

t.test('unfinished bodies are capped in total too (here with no per-address cap): 503 GW_ERR_SERVER_OVERLOADED', async (t) => {
  const g = await startGatewayProcess(t, { extraConfig: 'limits: { bodyBufferBytesPerClientIp: 0, bodyBufferBytes: 8388608 }' });
  const a = await attack(t, g.url, '127.0.0.3', 1, 40, MiB - 1024);
  await waitFor('the streams over the total cap to be refused', () => a.codes.length >= 30, 60_000);
  t.same([...new Set(a.statuses)], [503], 'each refusal is a 503');
  t.same([...new Set(a.codes)], ['GW_ERR_SERVER_OVERLOADED'], 'with GW_ERR_SERVER_OVERLOADED');
});

t.test('an HTTP/2 client that goes away mid-body gives its bytes back: its address is served again', async (t) => {
  const g = await startGatewayProcess(t, { extraConfig: 'limits: { bodyBufferBytesPerClientIp: 8388608, bodyBufferBytes: 0 }' });
  // 10 streams of 1 MiB less 1 KiB: 8 fill the address's 8 MiB, the 2 refused show they were received.
  const a = await attack(t, g.url, '127.0.0.5', 1, 10, MiB - 1024);
  await waitFor('the streams over the cap to be refused', () => a.codes.length >= 2, 60_000);
  t.same([...new Set(a.codes)], ['GW_ERR_REQ_TOO_MANY_IN_FLIGHT'], 'the address is at its cap');
  for (const s of a.sessions) s.destroy();
  // The 8 held bodies' bytes come back when the gateway sees their streams close; until then a
  // new body from the address may still be refused, so ask until it is served.
  const u = new URL(g.url);
  const c = await connect(g.url, { createConnection: () => net.connect({ port: Number(u.port), host: u.hostname, localAddress: '127.0.0.5' }) } as http2.SecureClientSessionOptions);
  t.teardown(() => c.destroy());
  let last = 0;
  await waitFor('the same address to be served again', async () => {
    last = (await within('a request from the address', post(c, '/v1/completions', { model: 'ghost-small', prompt: PROMPT_64K, stream: true }), 30_000)).status;
    return last === 200;
  }, 30_000).catch(() => undefined);
  t.equal(last, 200, 'a completion from the address that went away is served (its held bytes were given back)');
});

t.test('an HTTP/1.1 client that goes away mid-body gives its bytes back: its address is served again', async (t) => {
  const g = await startGatewayProcess(t, { extraConfig: 'limits: { bodyBufferBytesPerClientIp: 8388608, bodyBufferBytes: 0 }' });
  const u = new URL(g.url);
  const body = Buffer.alloc(MiB - 1024, 0x61);
  const sockets: net.Socket[] = [];
  t.teardown(() => { for (const s of sockets) s.destroy(); });
  let refused = 0;
  // 10 sockets, each declaring 1 MiB and sending 1 MiB less 1 KiB of it: 8 fill the address's 8 MiB.
  for (let i = 0; i < 10; i++) {
    const s = net.connect({ port: Number(u.port), host: u.hostname, localAddress: '127.0.0.6' });
    s.on('error', () => { /* cut off */ });
    s.setEncoding('utf8');
    s.on('data', (d: string) => { if (d.startsWith('HTTP/1.1 429')) refused++; });
    s.write(`POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${MiB}\r\n\r\n`);
    s.write(body);
    sockets.push(s);
  }
  await waitFor('the sockets over the cap to be refused', () => refused >= 2, 60_000);
  for (const s of sockets) s.destroy();
  let last = 0;
  await waitFor('the same address to be served again', async () => {
    last = await new Promise<number>((resolve) => {
      const payload = JSON.stringify({ model: 'ghost-small', prompt: PROMPT_64K });
      const req = http.request(`${g.url}/v1/completions`, { method: 'POST', localAddress: '127.0.0.6', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); });
      req.on('error', () => resolve(0));
      req.end(payload);
    });
    return last === 200;
  }, 30_000).catch(() => undefined);
  t.equal(last, 200, 'a completion from the address that went away is served (its held bytes were given back)');
});
