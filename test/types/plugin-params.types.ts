/**
 * The params types of the built-in plugins are derived from their params JSON Schemas
 * (`FromSchema<typeof paramsSchema>`): one source, nothing to keep in step. These assertions pin
 * what the derived types are, so a schema edit that changes what `create` receives (a default
 * dropped makes a field optional, a type widened) fails `npx tsc -p .` here. The expected shapes
 * are the hand-written interfaces the plugins were written against before the derivation.
 */
import type { AbTestParams } from '../../plugins/ab-test/index.ts';
import type { AuthParams } from '../../plugins/auth/index.ts';
import type { LogitBiasParams } from '../../plugins/logit-bias/index.ts';
import type { MirrorParams } from '../../plugins/mirror/index.ts';
import type { ModelRewriteParams } from '../../plugins/model-rewrite/index.ts';
import type { RateLimitParams } from '../../plugins/rate-limit/index.ts';
import type { SetHeadersParams } from '../../plugins/set-headers/index.ts';
import type { SetParamsParams } from '../../plugins/set-params/index.ts';
import type { StripParamsParams } from '../../plugins/strip-params/index.ts';
import type { SupersedeParams } from '../../plugins/supersede/index.ts';
import type { TrafficSplitParams } from '../../plugins/traffic-split/index.ts';
import type { VersionGateParams } from '../../plugins/version-gate/index.ts';
import type { Equal, Expect } from './equal.ts';

export type Checks = [
  // `set` values are any JSON in YAML; the schema leaves them open, so they are `unknown` here.
  Expect<Equal<AbTestParams, {
    experiment: string;
    stickyOn: string;
    header: string;
    arms: { name: string; weight: number; upstream?: string; model?: string; set?: { [k: string]: unknown }; remove?: string[] }[];
  }>>,
  Expect<Equal<AuthParams, { optional: boolean }>>,
  Expect<Equal<LogitBiasParams, { bias: { [k: string]: number }; merge: 'policy-wins' | 'client-wins' | 'sum' }>>,
  Expect<Equal<MirrorParams, { upstream: string; percent: number; maxConcurrent: number; timeoutMs: number }>>,
  Expect<Equal<ModelRewriteParams, { map: { [k: string]: string | { upstream: string; model: string } } }>>,
  Expect<Equal<RateLimitParams, { key: string; ratePerSecond: number; burst: number; status: number; maxKeys: number; bucketSet?: string; shared: 'exact' | 'fast' }>>,
  Expect<Equal<SetHeadersParams, { upstream: { [k: string]: string }; response: { [k: string]: string } }>>,
  Expect<Equal<SetParamsParams, { set: { [k: string]: unknown }; onlyIfAbsent: boolean }>>,
  Expect<Equal<StripParamsParams, { remove: string[] }>>,
  Expect<Equal<SupersedeParams, { keyFrom: { header?: string; bodyPointer?: string }; identity: string; maxEntries: number; maxKeyLength: number }>>,
  Expect<Equal<TrafficSplitParams, { stickyOn: string; seed: string; targets: { upstream: string; model?: string; weight: number }[] }>>,
  Expect<Equal<VersionGateParams, {
    minimum: string | { [k: string]: string };
    status: number;
    message: string;
    upgradeUrl?: string;
    allowEditors?: string[];
    onMissing: 'allow' | 'reject';
    headers?: { editor?: string; plugin?: string };
  }>>,
];
