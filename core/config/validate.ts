/** ajv set up once; schema errors turned into located, readable GatewayErrors. */
import { Ajv } from 'ajv';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { GatewayError } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';
import type { JsonSchema } from '../types.ts';
import type { YamlSource } from './yaml-source.ts';

/** One ajv for config: defaults applied, `"8080"` from `${PORT}` coerced to 8080. */
export const configAjv = new Ajv({ allErrors: true, useDefaults: true, coerceTypes: true, strict: false });
/** One ajv for plugin params: defaults applied, no coercion (params are typed YAML). */
export const paramsAjv = new Ajv({ allErrors: true, useDefaults: true, coerceTypes: false, strict: false });

const compiled = new WeakMap<object, ValidateFunction>();
/** Compile a schema once per schema object (plugins' schemas are module constants). */
export function validatorFor(ajv: Ajv, schema: JsonSchema): ValidateFunction {
  let v = compiled.get(schema);
  if (!v) { v = ajv.compile(schema); compiled.set(schema, v); }
  return v;
}

/** Readable one-liner for an ajv error. */
export function describeAjvError(e: ErrorObject): string {
  const at = e.instancePath ? e.instancePath.slice(1).replace(/\//g, '.') : '(top level)';
  switch (e.keyword) {
    case 'additionalProperties': return `${at}: unknown property "${(e.params as { additionalProperty: string }).additionalProperty}"`;
    case 'enum': return `${at}: must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'required': return `${at}: missing required property "${(e.params as { missingProperty: string }).missingProperty}"`;
    default: return `${at}: ${e.message ?? e.keyword}`;
  }
}

/**
 * Validate `value` (mutated: defaults are filled in). Errors are pushed, located in `src` with
 * `prefix` segments prepended to each ajv instance path (for params nested inside a file).
 */
export function validateInto(
  validate: ValidateFunction, value: unknown, src: YamlSource | undefined, file: string,
  errors: GatewayError[], code: ErrorCode = 'GW_ERR_CONFIG_SCHEMA', prefix: ReadonlyArray<string | number> = [], argsPrefix: string[] = [],
): boolean {
  if (validate(value)) return true;
  const seen = new Set<string>();
  for (const e of pruneOneOf(validate.errors ?? [])) {
    const msg = describeAjvError(e);
    if (seen.has(msg)) continue;
    seen.add(msg);
    const path = [...prefix, ...e.instancePath.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))];
    const location = src ? src.locate(path) : { file };
    errors.push(new GatewayError(code, [...argsPrefix, msg], { location }));
  }
  return false;
}

/** ajv reports every branch of a failed oneOf; keep the summary unless it is the only thing. */
function pruneOneOf(errs: ErrorObject[]): ErrorObject[] {
  const oneOfPaths = new Set(errs.filter((e) => e.keyword === 'oneOf').map((e) => e.instancePath));
  return errs.filter((e) => e.keyword === 'oneOf' || !oneOfPaths.has(e.instancePath) || e.keyword === 'additionalProperties');
}
