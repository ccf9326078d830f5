/**
 * Admission: one client session may hold only so many upstream streams
 * (`http2.maxInflightPerSession`; HTTP/1.1 has one at a time), and one client address only so
 * many across its connections (`limits.maxInflightPerClientIp`). Counted once per request,
 * whatever the number of attempts; released in `Call.finish`. Cost: a property read, one map get
 * and set.
 */
import { GatewayError } from '../errors.ts';
import type { Runtime } from '../runtime.ts';
import { guardOfStream } from '../server/client-sessions.ts';
import type { SessionGuard } from '../server/client-sessions.ts';
import type { ClientResponse } from './response.ts';
import type { GatewayState } from './state.ts';

/** What admission reads and sets of its Call (call.ts; declared here so this file need not import it). */
export interface AdmittedCall {
  readonly gw: GatewayState;
  readonly rt: Runtime;
  readonly res: ClientResponse;
  guard: SessionGuard | undefined;
  countedIp: string | undefined;
  failBeforeHeaders(e: unknown): void;
}

/** Count `call` against its caps; false (the call already answered 429) if one is full. */
export function admit(call: AdmittedCall): boolean {
  const rt = call.rt;
  const guard = guardOfStream(call.res.stream);
  if (guard !== undefined && guard.upstreamInflight >= rt.config.http2.maxInflightPerSession) {
    call.failBeforeHeaders(new GatewayError('GW_ERR_REQ_TOO_MANY_IN_FLIGHT', [`on this connection (${rt.config.http2.maxInflightPerSession})`], { headers: { 'retry-after': '1' } }));
    return false;
  }
  const ipCap = rt.config.limits.maxInflightPerClientIp;
  if (ipCap > 0) {
    const ip = guard !== undefined ? guard.ip : call.res.req?.socket?.remoteAddress ?? '';
    if (!call.gw.clientInflight.take(ip, ipCap)) {
      call.failBeforeHeaders(new GatewayError('GW_ERR_REQ_TOO_MANY_IN_FLIGHT', [`from this client address (${ipCap})`], { headers: { 'retry-after': '1' } }));
      return false;
    }
    call.countedIp = ip;
  }
  if (guard !== undefined) {
    guard.upstreamInflight++;
    call.guard = guard;
  }
  return true;
}
