/**
 * Reads the authserv-id of an Authentication-Results field (RFC 8601 2.2), so that the fields
 * that claim to come from Sterna can be removed from incoming mail before anything reads them
 * (RFC 8601 5: a border MTA must delete fields that claim its own authserv-id, or a sender
 * could forge a pass). Pure; no I/O. Trust level: the field text is untrusted client input.
 *
 * RFC 8601 2.2: authres-header-field = "Authentication-Results:" [CFWS] authserv-id
 * [ CFWS authres-version ] ( no-result / 1*resinfo ) [CFWS] CRLF, and authserv-id = value
 * (RFC 2045 token or RFC 5322 quoted-string). Comments nest (RFC 5322 3.2.2).
 */

export const AUTH_RESULTS_NAME = 'authentication-results';

/** RFC 2045 5.1 tspecials, plus space and controls: what ends a token. */
const TSPECIALS = new Set('()<>@,;:\\"/[]?= \t\r\n'.split(''));

/**
 * The authserv-id of a field's value (the text after the colon, folding included), or null when
 * the value does not start with one (malformed: RFC 8601 5 allows deleting such a field too).
 */
export function authservIdOf(value: string): string | null {
  let i = skipCfws(value, 0);
  if (i < 0 || i >= value.length) return null;
  if (value[i] === '"') {
    let out = '';
    for (i++; i < value.length; i++) {
      const c = value[i]!;
      if (c === '\\') {
        i++;
        if (i < value.length) out += value[i]!;
      } else if (c === '"') return out;
      else if (c !== '\r' && c !== '\n') out += c;
    }
    return null; // unterminated quoted-string
  }
  let out = '';
  for (; i < value.length && !TSPECIALS.has(value[i]!); i++) {
    const code = value.charCodeAt(i);
    if (code < 0x20 || code === 0x7f) return null;
    out += value[i]!;
  }
  return out === '' ? null : out;
}

/** Index after white space, folding and (nested) comments from `i`; -1 for an unclosed comment. */
function skipCfws(s: string, i: number): number {
  let depth = 0;
  for (; i < s.length; i++) {
    const c = s[i]!;
    if (depth > 0) {
      if (c === '\\') i++;
      else if (c === '(') depth++;
      else if (c === ')') depth--;
      continue;
    }
    if (c === '(') depth = 1;
    else if (c !== ' ' && c !== '\t' && c !== '\r' && c !== '\n') return i;
  }
  return depth > 0 ? -1 : i;
}

/**
 * True when a whole Authentication-Results field (name, colon, value, folding) must be removed:
 * it claims `ourId` (compared case-insensitively: an authserv-id is normally a domain name), or
 * it has no readable authserv-id at all.
 */
export function claimsAuthservId(field: string, ourId: string): boolean {
  const colon = field.indexOf(':');
  if (colon < 0) return true;
  const id = authservIdOf(field.slice(colon + 1));
  return id === null || id.toLowerCase() === ourId.toLowerCase();
}
