/**
 * Unfinished request bodies cannot fill the gateway's memory: bytes of bodies being received are
 * capped per client address (`limits.bodyBufferBytesPerClientIp`) and in total
 * (`limits.bodyBufferBytes`), against a gateway process, measured by its resident memory.
 */
import http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import t from 'tap';
import type { Test } from 'tap';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { connect, post, waitFor, within } from '../helpers/h2.ts';

const MiB = 1024 * 1024;
const rssMiB = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

interface Attack { statuses: number[]; codes: string[] }

/** `conns` connections from `address`, `streams` streams each, each sending `perStream` bytes of body and never ending it. */
async function attack(t: Test, url: string, address: string, conns: number, streams: number, perStream: number): Promise<Attack> {
  const u = new URL(url);
  const chunk = Buffer.alloc(perStream, 0x61);
  const out: Attack = { statuses: [], codes: [] };
  const sessions: ClientHttp2Session[] = [];
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
