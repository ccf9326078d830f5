/**
 * The soak's gateway and model settings, shared by bench/soak.ts and bench/memprobe.ts (which
 * probes memory under the soak's settings without its fault proxy).
 */
export const SOAK_MODEL_ARGS = ['--ttft-ms', '30', '--token-ms', '5', '--tokens', '12'];

export const SOAK_POLICY = `name: soak
match: { paths: [/v1/completions, /v1/chat/completions] }
steps:
  - use: auth
`;

export function soakGatewayConfig(port: number, admin: number, upstreamUrl: string): string {
  return `listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${admin} }
upstreams:
  local:
    url: ${upstreamUrl}
    protocol: h2c
    pool: { size: 2 }
    timeouts: { connectMs: 1000, firstByteMs: 3000, idleMs: 3000 }
    forwardHeaders: [user-agent, x-tokens, x-token-ms]
models:
  ghost-small: { upstream: local, aliases: [ghost] }
defaultModel: ghost-small
policies: [policies/*.yaml]
modelServer: { enabled: false }
auth: { dev: true, tokenTtl: 2h }
reload: { watch: false }
logging: { level: error }
`;
}
