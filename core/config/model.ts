/**
 * The validated config model: what `gateway.config.yaml` and `policies/*.yaml` mean once
 * parsed, interpolated and checked against the schema (defaults applied). Layer two of three:
 * YAML → this model → the compiled Runtime.
 *
 * One source: every type here is derived from the JSON Schemas in `schema.ts` (json-schema-to-ts
 * `FromSchema`; a property with a `default` is a required field, since ajv fills it in). What
 * each key means, its default and why: the schema's `description`s and docs/configuration.md.
 * The only additions are what the loader derives after validation (`checkGateway` in load.ts)
 * and the `auth` section, which core/auth validates further and types itself.
 * test/types/config-model.types.ts pins what the code relies on.
 */
import type { FromSchema } from 'json-schema-to-ts';
import type { JsonObject } from '../types.ts';
import type { gatewayConfigSchema, policyBaseSchema } from './schema.ts';

/** The config exactly as the schema types it (defaults applied, nothing derived yet). */
type SchemaConfig = FromSchema<typeof gatewayConfigSchema>;
type SchemaUpstream = SchemaConfig['upstreams'][string];

/** An intersection flattened into one object type (readable in hovers, comparable in type tests). */
type Flat<T> = { [K in keyof T]: T[K] };

/** A secret is never written in YAML: it names where to read it from. */
export type SecretRef = { env: string } | { file: string };

export type ListenConfig = SchemaConfig['listen'];
export type Http2Settings = SchemaConfig['http2'];
export type LimitsConfig = SchemaConfig['limits'];
type SchemaModel = SchemaConfig['models'][string];
/** A deployment of a model; the loader fills `model` (default: the model's upstreamModel, else its name). */
export type DeploymentConfig = Flat<Omit<NonNullable<SchemaModel['deployments']>[number], 'model'> & { model: string }>;
export type FailoverConfig = SchemaModel['failover'];
/**
 * A logical model: `upstream` (one deployment) or `deployments` (exactly one of them, checked by
 * the loader). With `deployments`, the loader sets `upstream` to the preferred deployment's
 * upstream: what a request's route names until a deployment is picked.
 */
export type ModelConfig = Flat<Omit<SchemaModel, 'upstream' | 'deployments'> & { upstream: string; deployments?: DeploymentConfig[] }>;
export type HealthConfig = SchemaConfig['health'];
export type ModelServerConfig = SchemaConfig['modelServer'];

/**
 * An upstream. The loader derives what the schema leaves open: `protocol` (h2c for http://, h2
 * for https://) and `pool.size` (2 sessions for h2, 64 sockets for http1).
 */
export type UpstreamConfig = Flat<Omit<SchemaUpstream, 'protocol' | 'pool'> & {
  protocol: NonNullable<SchemaUpstream['protocol']>;
  pool: Flat<Omit<SchemaUpstream['pool'], 'size'> & { size: number }>;
}>;

export type GatewayConfig = Flat<Omit<SchemaConfig, '$schema' | 'upstreams' | 'models' | 'auth'> & {
  upstreams: Record<string, UpstreamConfig>;
  models: Record<string, ModelConfig>;
  /** Token exchange and verification (core/auth validates and types it). Absent: no `auth` step may be used. */
  auth?: JsonObject;
}>;

type SchemaPolicy = FromSchema<typeof policyBaseSchema>;

export type StepConfig = Flat<Omit<SchemaPolicy['steps'][number], 'params'> & {
  /** Validated against the plugin's own params schema when the runtime is built. */
  params: JsonObject;
}>;

export type PolicyConfig = Flat<Omit<SchemaPolicy, '$schema' | 'steps'> & { steps: StepConfig[] }>;
