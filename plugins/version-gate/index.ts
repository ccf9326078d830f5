/**
 * version-gate: answer clients older than a minimum version with a reply the editor can turn
 * into a "please upgrade" dialog (default 426, `GW_ERR_POLICY_UPGRADE_REQUIRED`), instead of
 * sending their requests to a model they no longer work with.
 *
 * Versions come from `ex.facts.client` (the core parses the `editor-version` and
 * `editor-plugin-version` headers, `name/x.y.z`), or from other headers named in `headers`.
 * Every minimum is parsed at load and every reply is built at load: a request costs a version
 * parse (cached by the core) and a comparison.
 */
import { compareSemver, deepFreeze, definePlugin, parseSemver } from '../../core/plugin-api.ts';
import type { Exchange, LocalReply, Semver, FromSchema, JsonSchema } from '../../core/plugin-api.ts';


const VERSION = { type: 'string', minLength: 1, maxLength: 64 } as const;
const HEADER = { type: 'string', minLength: 1, maxLength: 128, pattern: '^[a-z0-9!#$%&\'*+.^_`|~-]+$' } as const;

/** The client's identity as this gate sees it. */
interface ClientId { editor: string | undefined; editorVersion: string | undefined; plugin: string | undefined; version: string | undefined }

/**
 * - `minimum`: a version the editor extension (`client.version`) must reach, or a minimum per
 *   extension or editor name (`{ copilot: "1.200.0", vscode: "1.90.0" }`; names match
 *   case-insensitively, as the core lower-cases the names it parses).
 * - `status` (426), `message`: the reply. `upgradeUrl`: sent as `upgrade_url`.
 * - `allowEditors`: when set, only these editors (`client.editor`, case-insensitive) are served; others get 403.
 * - `onMissing` (`allow`): what to do when the version to check is missing or unparseable.
 * - `headers`: read `name/version` from these request headers instead of the core's parsed client
 *   facts (they must be listed in `facts.headers` of the gateway config).
 */
const paramsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['minimum'],
  properties: {
    minimum: {
      oneOf: [
        VERSION,
        { type: 'object', minProperties: 1, propertyNames: { minLength: 1, maxLength: 128 }, additionalProperties: VERSION },
      ],
    },
    status: { type: 'integer', minimum: 400, maximum: 599, default: 426 },
    message: { type: 'string', minLength: 1, maxLength: 1024, default: 'This version of your editor extension is no longer supported. Please upgrade.' },
    upgradeUrl: { type: 'string', maxLength: 2048, pattern: '^https?://[^\\s]+$' },
    allowEditors: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', minLength: 1, maxLength: 128 } },
    onMissing: { enum: ['allow', 'reject'], default: 'allow' },
    headers: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      properties: { editor: HEADER, plugin: HEADER },
    },
  },
} as const satisfies JsonSchema;

/** The params after validation (defaults applied), derived from the schema. */
export type VersionGateParams = FromSchema<typeof paramsSchema>;

export default definePlugin<VersionGateParams>({
  name: 'version-gate',
  description: 'Answer clients below a minimum editor/extension version with an upgrade reply (default 426).',
  paramsSchema,
  create(params, ctx) {
    const upgradeReply = (minimum: string | undefined): LocalReply => deepFreeze({
      status: params.status,
      body: {
        error: {
          code: 'GW_ERR_POLICY_UPGRADE_REQUIRED',
          message: params.message,
          ...(minimum !== undefined ? { minimum_version: minimum } : {}),
          ...(params.upgradeUrl !== undefined ? { upgrade_url: params.upgradeUrl } : {}),
        },
      },
    });
    const parseMin = (v: string, path: string): Semver => {
      const s = parseSemver(v);
      if (s === null) throw ctx.error(`"${v}" is not a version (expected x.y.z)`, path);
      return s;
    };

    const allow = params.allowEditors ? new Set(params.allowEditors.map((e) => e.toLowerCase())) : undefined;
    const editorReply: LocalReply | undefined = allow && deepFreeze({
      status: 403,
      body: {
        error: {
          code: 'GW_ERR_POLICY_REJECTED',
          message: 'Request rejected by policy: this editor is not supported',
          allowed_editors: [...allow],
          ...(params.upgradeUrl !== undefined ? { upgrade_url: params.upgradeUrl } : {}),
        },
      },
    });
    const rejectMissing = params.onMissing === 'reject';
    const identify = params.headers ? fromHeaders(params.headers.editor, params.headers.plugin) : fromFacts;

    /** Editor allow-list: a reply, or undefined to go on. */
    function checkEditor(id: ClientId): LocalReply | undefined {
      if (allow === undefined) return undefined;
      if (id.editor === undefined) return rejectMissing ? editorReply : undefined;
      return allow.has(id.editor) ? undefined : editorReply;
    }

    if (typeof params.minimum === 'string') {
      const min = parseMin(params.minimum, 'minimum');
      const reply = upgradeReply(params.minimum);
      return {
        request: function versionGate(ex) {
          const id = identify(ex);
          const denied = checkEditor(id);
          if (denied !== undefined) return denied;
          const v = parseSemver(id.version);
          if (v === null) return rejectMissing ? reply : undefined;
          return compareSemver(v, min) < 0 ? reply : undefined;
        },
      };
    }

    const mins = new Map<string, { min: Semver; reply: LocalReply }>();
    for (const [name, version] of Object.entries(params.minimum)) {
      const key = name.toLowerCase();
      if (mins.has(key)) throw ctx.error(`"${name}" is listed twice (names are case-insensitive)`, `minimum.${name}`);
      mins.set(key, { min: parseMin(version, `minimum.${name}`), reply: upgradeReply(version) });
    }
    const noIdentity = upgradeReply(undefined);
    return {
      request: function versionGateByName(ex) {
        const id = identify(ex);
        const denied = checkEditor(id);
        if (denied !== undefined) return denied;
        if (id.plugin === undefined && id.editor === undefined) return rejectMissing ? noIdentity : undefined;
        const p = id.plugin === undefined ? undefined : mins.get(id.plugin);
        if (p !== undefined) {
          const v = parseSemver(id.version);
          if (v === null ? rejectMissing : compareSemver(v, p.min) < 0) return p.reply;
        }
        const e = id.editor === undefined ? undefined : mins.get(id.editor);
        if (e !== undefined) {
          const v = parseSemver(id.editorVersion);
          if (v === null ? rejectMissing : compareSemver(v, e.min) < 0) return e.reply;
        }
        return undefined;
      },
    };
  },
});

const fromFacts = (ex: Exchange): ClientId => ex.facts.client;

/**
 * Identity from configured headers (`name/version`, or a bare version), parsed like the core
 * parses `editor-version`: names lower-cased. Unset headers fall back to the client facts.
 */
function fromHeaders(editorHeader: string | undefined, pluginHeader: string | undefined): (ex: Exchange) => ClientId {
  return function clientFromHeaders(ex) {
    const c = ex.facts.client;
    const h = ex.facts.request.headers;
    const id: ClientId = { editor: c.editor, editorVersion: c.editorVersion, plugin: c.plugin, version: c.version };
    if (editorHeader !== undefined) {
      const v = h[editorHeader];
      id.editor = nameOf(v);
      id.editorVersion = versionOf(v);
    }
    if (pluginHeader !== undefined) {
      const v = h[pluginHeader];
      id.plugin = nameOf(v);
      id.version = versionOf(v);
    }
    return id;
  };
}

function nameOf(v: string | undefined): string | undefined {
  const slash = v === undefined || v.length > 256 ? -1 : v.indexOf('/');
  return slash === -1 ? undefined : v!.slice(0, slash).trim().toLowerCase() || undefined;
}

function versionOf(v: string | undefined): string | undefined {
  if (v === undefined || v.length > 256) return undefined;
  return v.slice(v.indexOf('/') + 1).trim() || undefined;
}
