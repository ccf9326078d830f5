/** JSON Schema of the `auth:` section of gateway.config.yaml (filled in by the auth module). */
import type { JsonSchema } from '../types.ts';

export const authConfigSchema: JsonSchema = { type: 'object' };
