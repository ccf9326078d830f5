/**
 * The config model (core/config/model.ts) is derived from the JSON Schemas (core/config/schema.ts).
 * These assertions pin what the code relies on, so a schema edit that changes it fails
 * `npx tsc -p .`: defaulted keys are present, keys without a default are optional, enums stay
 * literal unions, secrets are `{env} | {file}`, the loader's derived fields are required.
 */
import type { DeploymentConfig, FailoverConfig, GatewayConfig, HealthConfig, Http2Settings, LimitsConfig, ListenConfig, ModelConfig, ModelServerConfig, PolicyConfig, SecretRef, StepConfig, UpstreamConfig } from '../../core/config/model.ts';
import type { CopilotConfig } from '../../core/copilot/config.ts';
import type { JsonObject } from '../../core/types.ts';
import type { Equal, Expect, Optional } from './equal.ts';

export type Checks = [
  Expect<Equal<ListenConfig, { host: string; port: number; tls?: { host: string; port: number; cert: SecretRef; key: SecretRef } }>>,
  Expect<Equal<Http2Settings, {
    maxConcurrentStreams: number; streamResetBurst: number; streamResetRate: number; rapidResetLimit: number;
    maxInflightPerSession: number; sessionIdleTimeoutMs: number;
  }>>,
  Expect<Equal<LimitsConfig, {
    bodyBytes: number; headerBytes: number; headersTimeoutMs: number; bodyTimeoutMs: number; maxConnections: number;
    maxConnectionsPerIp: number; jsonDepth: number; maxInflightPerClientIp: number; clientStallMs: number;
    bodyBufferBytesPerClientIp: number; bodyBufferBytes: number;
  }>>,
  Expect<Equal<UpstreamConfig['protocol'], 'h2c' | 'h2' | 'http1'>>,
  Expect<Equal<UpstreamConfig['pool'], { size: number; pingIntervalMs: number; warm: boolean }>>,
  Expect<Equal<UpstreamConfig['timeouts'], { connectMs: number; firstByteMs: number; idleMs: number }>>,
  Expect<Equal<NonNullable<UpstreamConfig['credential']>, { header: string; prefix: string; secret: SecretRef }>>,
  Expect<Optional<UpstreamConfig, 'credential'>>,
  Expect<Equal<NonNullable<UpstreamConfig['tls']>, { ca?: SecretRef; servername?: string; rejectUnauthorized: boolean }>>,
  Expect<Optional<UpstreamConfig, 'tls'>>,
  Expect<Equal<UpstreamConfig['forwardHeaders'], string[]>>,
  Expect<Equal<UpstreamConfig['maxRetries'], number>>,
  Expect<Equal<UpstreamConfig['url'], string>>,
  Expect<Equal<Omit<ModelConfig, 'deployments' | 'failover'>, { upstream: string; upstreamModel?: string; aliases: string[] }>>,
  Expect<Equal<NonNullable<ModelConfig['deployments']>[number], DeploymentConfig>>,
  Expect<Equal<DeploymentConfig, { upstream: string; model: string; region: string; weight: number; priority: number; maxConcurrent: number }>>,
  Expect<Equal<FailoverConfig, { attempts: number; budgetMs: number; ejection: { consecutiveFailures: number; errorRate: number; minRequests: number; windowMs: number; baseMs: number; maxMs: number } }>>,
  Expect<Equal<HealthConfig, { slo: number; recoverAt?: number; windowSeconds: number; minRequests: number; probe: { intervalMs: number; timeoutMs: number } }>>,
  Expect<Equal<ModelServerConfig, { enabled: boolean; host: string; port: number; ttftMs: number; tokenMs: number; tokens: number }>>,
  Expect<Equal<GatewayConfig['admin'], { host: string; port: number; enabled: boolean; credential?: SecretRef; insecureAllowNoCredential: boolean }>>,
  Expect<Equal<GatewayConfig['facts'], { headers: string[] }>>,
  Expect<Equal<GatewayConfig['client'], { editorHeader: string; pluginHeader: string }>>,
  Expect<Equal<GatewayConfig['defaultModel'], string | undefined>>,
  Expect<Equal<GatewayConfig['policies'], string[]>>,
  Expect<Equal<GatewayConfig['reload'], { watch: boolean; debounceMs: number }>>,
  Expect<Equal<GatewayConfig['shutdown'], { drainDelayMs: number; graceMs: number }>>,
  Expect<Equal<GatewayConfig['logging'], { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' }>>,
  Expect<Equal<GatewayConfig['upstreams'], Record<string, UpstreamConfig>>>,
  Expect<Equal<GatewayConfig['auth'], JsonObject | undefined>>,
  Expect<Equal<CopilotConfig, { enabled: boolean; endpoints: { api?: string; proxy?: string; telemetry?: string; 'origin-tracker'?: string }; experiments: boolean }>>,
  Expect<Equal<GatewayConfig['copilot'], CopilotConfig>>,
  Expect<Equal<StepConfig, { use: string; name?: string; when?: unknown; params: JsonObject }>>,
  Expect<Equal<keyof PolicyConfig, 'name' | 'description' | 'enabled' | 'match' | 'steps'>>,
  Expect<Equal<PolicyConfig['name'], string>>,
  Expect<Optional<PolicyConfig, 'description'>>,
  Expect<Equal<PolicyConfig['enabled'], boolean>>,
  Expect<Equal<PolicyConfig['match'], { paths?: ('/v1/completions' | '/v1/chat/completions' | '/v1/engines/:model/completions')[]; models?: string[] }>>,
  Expect<Equal<PolicyConfig['steps'], StepConfig[]>>,
];
