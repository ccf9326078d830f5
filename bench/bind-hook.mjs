// For benchmarks of processes other than the gateway (`node --import ./bench/bind-hook.mjs`, e.g.
// gc-survival.ts --client-flags for node-h2-client): the gateway's own runtime patch
// (core/runtime-patches.ts: AsyncResource.prototype.bind without the deprecated `asyncResource`
// accessor, which makes every HTTP/2 client stream survive scavenges; bench/README.md, GC), applied
// to any Node process. The gateway applies it itself (`ghostgate start`).
import { applyRuntimePatches } from '../core/runtime-patches.ts';

applyRuntimePatches();
