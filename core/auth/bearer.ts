/** `Authorization: Bearer <token>` parsing (RFC 6750), shared by the `auth` step and the exchange. */

/**
 * The token of a Bearer authorization header; undefined if there is none (absent, empty, another
 * scheme). `null` if the header is present but unusable (several values). No copy is made
 * beyond the one slice.
 */
export function bearerToken(header: string | string[] | undefined): string | undefined | null {
  if (header === undefined) return undefined;
  if (typeof header !== 'string') return null;
  // "Bearer" is case-insensitive; then one or more spaces.
  if (header.length < 8) return undefined;
  const c0 = header.charCodeAt(0) | 0x20;
  if (c0 !== 0x62 /* b */ || header.slice(0, 6).toLowerCase() !== 'bearer' || header.charCodeAt(6) !== 0x20) return undefined;
  let i = 7;
  while (i < header.length && header.charCodeAt(i) === 0x20) i++;
  let j = header.length;
  while (j > i && header.charCodeAt(j - 1) === 0x20) j--;
  return j > i ? header.slice(i, j) : undefined;
}
