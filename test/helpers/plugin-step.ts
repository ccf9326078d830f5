/**
 * Load a plugin the way the runtime does: validate `params` against its `paramsSchema` with the
 * core's params ajv (defaults applied, no coercion, all errors), so a schema failure is the same
 * `GW_ERR_CONFIG_PLUGIN_PARAMS` error, then call `create`. For step-level tests and benchmarks.
 */
import { paramsAjv, validateInto, validatorFor } from '../../core/config/validate.ts';
import type { GatewayError } from '../../core/errors.ts';
import { createPluginContext } from '../../core/plugin-context.ts';
import type { PluginContextOptions } from '../../core/plugin-context.ts';
import type { PluginContext, PluginDefinition, Step } from '../../core/types.ts';

export interface LoadedStep { step: Step; ctx: PluginContext; params: unknown }

/** Validate a copy of `params` (defaults filled in) and create the step. Throws GatewayError on bad params. */
export async function loadStep<P>(
  def: PluginDefinition<P>, params: unknown, opts: Partial<PluginContextOptions> = {},
): Promise<LoadedStep> {
  const ctx = createPluginContext({ plugin: def.name, ...opts });
  const copy: unknown = structuredClone(params ?? {});
  const errors: GatewayError[] = [];
  if (!validateInto(validatorFor(paramsAjv, def.paramsSchema), copy, undefined, ctx.where, errors, 'GW_ERR_CONFIG_PLUGIN_PARAMS', ['params'], [def.name])) {
    throw errors[0]!;
  }
  const step = await def.create(copy as P, ctx);
  return { step, ctx, params: copy };
}
