/**
 * The public plugin API: everything a plugin may import from ghostgate, in one module. Built-in
 * plugins import it as `../../core/plugin-api.ts`; plugins outside this repository as
 * `ghostgate/plugin` (the package's subpath export). A plugin imports nothing else from the core
 * (test/plugins/api-boundary.test.ts fails when one does), so the core can change behind it.
 * docs/plugins.md documents each export.
 */

// The contract: a plugin is a definition whose `create` builds a per-request Step.
export { definePlugin, FACT_ROOTS } from './types.ts';
export type {
  AuthRuntime,
  CancelSignal,
  Exchange,
  FactRoot,
  Facts,
  JsonObject,
  JsonSchema,
  JsonValue,
  LocalReply,
  Logger,
  OutboundRequest,
  Outcome,
  PluginContext,
  PluginDefinition,
  Route,
  Step,
  StepResult,
  UpstreamClient,
  UpstreamResponse,
  UpstreamSendOptions,
} from './types.ts';

// Params types derived from the params JSON Schema (one source): `FromSchema<typeof schema>`,
// with properties that have a `default` typed as present (ajv fills them in before `create`).
export type { FromSchema } from 'json-schema-to-ts';

// Errors: throw a GatewayError with a catalog code to answer with that error.
export { GatewayError } from './errors.ts';
export type { ErrorCode } from './errors.ts';

// Helpers, compiled once in `create`, cheap per request.
export { getAt, parsePointer } from './json-pointer.ts';
export type { ParsedPointer } from './json-pointer.ts';
export { compileFactPath, factKey } from './fact-path.ts';
export type { FactReader } from './fact-path.ts';
export { compileWeightedPicker, seedState, stickyUnit } from './sticky-hash.ts';
export type { WeightedItem } from './sticky-hash.ts';
export { compareSemver, parseSemver } from './conditions.ts';
export type { Semver } from './conditions.ts';
export { deepFreeze, FORBIDDEN_KEYS, isForbiddenKey } from './safe-object.ts';
export { bearerToken } from './auth/bearer.ts';

// The gateway's own prom-client metric classes, for metrics registered on `ctx.metrics` (one
// prom-client for the registry and its metrics, whatever copy a plugin's folder has installed).
export { Counter, Gauge, Histogram } from 'prom-client';
export type { Registry } from 'prom-client';

// `ctx.store`: state shared by every worker and instance (store.redis), or undefined.
export type { LeaseResult, SharedStore, TakeResult } from './store/types.ts';
