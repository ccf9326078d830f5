/**
 * The built-in plugins, by name. A plain array: no directory scanning, no codegen. A plugin's
 * name is its folder under plugins/ and its `use:` value in policy YAML.
 */
import type { PluginDefinition } from '../core/plugin-api.ts';
import auth from './auth/index.ts';
import setHeaders from './set-headers/index.ts';
import stripParams from './strip-params/index.ts';
import setParams from './set-params/index.ts';
import logitBias from './logit-bias/index.ts';
import modelRewrite from './model-rewrite/index.ts';
import versionGate from './version-gate/index.ts';
import rateLimit from './rate-limit/index.ts';
import trafficSplit from './traffic-split/index.ts';
import abTest from './ab-test/index.ts';
import mirror from './mirror/index.ts';
import supersede from './supersede/index.ts';

// `any` for params: each definition is checked against its own params type where it is written.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const builtinPlugins: ReadonlyArray<PluginDefinition<any>> = [
  auth,
  setHeaders,
  stripParams,
  setParams,
  logitBias,
  modelRewrite,
  versionGate,
  rateLimit,
  trafficSplit,
  abTest,
  mirror,
  supersede,
];
