/**
 * Admission: one client session may hold only so many upstream streams
 * (`http2.maxInflightPerSession`; HTTP/1.1 has one at a time), and one client address only so
 * many across its connections (`limits.maxInflightPerClientIp`). Counted once per request,
 * whatever the number of attempts; released in `Call.finish`. Cost: a property read, one map get
 * and set.
 */
import { GatewayError } from '../errors.ts';
import { guardOfStream } from '../server/client-sessions.ts';
import type { Call } from './call.ts';

/** Count `call` against its caps; false (the call already answered 429) if one is full. */
export function admit(call: Call): boolean {
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
