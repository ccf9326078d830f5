/**
 * Load a plugin the way the core does: validate `params` against its `paramsSchema` with ajv
 * (`useDefaults`, no type coercion, all errors), turn a schema failure into the plugin context's
 * `GW_ERR_CONFIG_PLUGIN_PARAMS` error, then call `create`. For step-level tests.
 */
import { Ajv } from 'ajv';
import { createPluginContext } from '../../core/plugin-context.ts';
import type { PluginContextOptions } from '../../core/plugin-context.ts';
import type { PluginContext, PluginDefinition, Step } from '../../core/types.ts';

const ajv = new Ajv({ allErrors: true, useDefaults: true, coerceTypes: false, strict: false });

export interface LoadedStep { step: Step; ctx: PluginContext; params: unknown }

/** Validate `params` (defaults applied to a copy) and create the step. Throws GatewayError on bad params. */
export async function loadStep<P>(
  def: PluginDefinition<P>, params: unknown, opts: Partial<PluginContextOptions> = {},
): Promise<LoadedStep> {
  const ctx = createPluginContext({ plugin: def.name, ...opts });
  const copy: unknown = structuredClone(params ?? {});
  const validate = ajv.compile(def.paramsSchema);
  if (!validate(copy)) {
    const first = validate.errors![0]!;
    const path = first.instancePath.replace(/^\//, '').replace(/\//g, '.');
    throw ctx.error(validate.errors!.map((e) => `${e.instancePath || '/'} ${e.message}`).join('; '), path || undefined);
  }
  const step = await def.create(copy as P, ctx);
  return { step, ctx, params: copy };
}
