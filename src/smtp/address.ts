/**
 * Paths and mailboxes of MAIL FROM and RCPT TO: RFC 5321 4.1.2 grammar (with the limits of
 * 4.5.3.1), RFC 5321 4.1.1.3 source routes and <Postmaster>, RFC 6531 SMTPUTF8 addresses with
 * U-label domains (IDNA checked with node:url). Pure: no I/O.
 *
 * Trust: everything here comes from an unauthenticated peer. Parsing is strict and fails
 * closed: an address is returned only when the grammar is certain, and the returned domain is
 * always the one the mail would really go to (a source route is dropped, never followed), so
 * relay control can trust it.
 *
 * Canonical form of a Mailbox: `local` exactly as received (a quoted-string keeps its quotes
 * and backslashes, case is kept: RFC 5321 2.4 says local parts are case-sensitive); `domain`
 * as given by normalizeDomain(). unquoteLocal() gives the semantic value of a local part.
 */

import { isIPv4, isIPv6 } from 'node:net';
import { domainToASCII, domainToUnicode } from 'node:url';

export interface Mailbox {
  /** The local part as received, including quotes if it was a quoted-string. */
  local: string;
  /** The domain as normalizeDomain() returns it; '' only for the bare <Postmaster>. */
  domain: string;
}

/**
 * Why a path was refused. `detail` is short plain English, safe to show in a 501/553 reply
 * (it never echoes client input).
 */
export type AddressError = { kind: 'syntax'; detail: string } | { kind: 'needs-smtputf8'; detail: string };

export type ReversePathResult = { ok: true; mailbox: Mailbox | null } | { ok: false; error: AddressError };
export type ForwardPathResult = { ok: true; mailbox: Mailbox } | { ok: false; error: AddressError };

export interface AddressOptions {
  /** The transaction carries SMTPUTF8 (RFC 6531): non-ASCII local parts and U-label domains are allowed. */
  smtputf8: boolean;
}

// RFC 5321 4.5.3.1.1-4.5.3.1.3. Protocol limits, not tunables.
const MAX_LOCAL_OCTETS = 64;
const MAX_DOMAIN_OCTETS = 255;
const MAX_LABEL_OCTETS = 63;
const MAX_PATH_OCTETS = 256;

/** C0, DEL, C1 controls, unpaired surrogates, line and paragraph separators: never valid anywhere. */
const FORBIDDEN = /[\p{Cc}\p{Cs}\p{Zl}\p{Zp}]/u;
/** RFC 5322 3.2.3 atext, ASCII part. */
const ATEXT = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]$/;
/** Unicode space separators (U+00A0, U+3000 …): not atext even under SMTPUTF8. */
const UNICODE_SPACE = /^\p{Zs}$/u;
/** RFC 5321 sub-domain = Let-dig [Ldh-str]. */
const LDH_LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/i;
/** Characters an IPv6 literal may contain (node's isIPv6 also accepts "%zone", which RFC 5321 does not). */
const IPV6_CHARS = /^[0-9a-f:.]+$/i;
/** RFC 5321 General-address-literal = Standardized-tag ":" 1*dcontent. */
const GENERAL_LITERAL = /^[a-z0-9-]*[a-z0-9]:[\x21-\x5a\x5e-\x7e]+$/i;

type Step<T> = { ok: true; value: T } | { ok: false; error: AddressError };

function syntax(detail: string): { ok: false; error: AddressError } {
  return { ok: false, error: { kind: 'syntax', detail } };
}

function octets(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/** True when every character of `s` is US-ASCII (U+0000-U+007F). */
export function isAsciiOnly(s: string): boolean {
  return /^[\x00-\x7f]*$/.test(s);
}

/**
 * The canonical form of a domain, used in Mailbox.domain: ASCII lower-cased; a domain with
 * U-labels is NFC-normalised and lower-cased but kept in Unicode (it is NOT converted to
 * A-labels, so that an SMTPUTF8 envelope keeps what the sender wrote); "[IPv6:…]" literals keep
 * the tag spelled "IPv6" and lower-case the address. Compare domains that may be written both as
 * U-labels and A-labels with domainToAscii().
 */
export function normalizeDomain(d: string): string {
  if (/^\[ipv6:/i.test(d)) return `[IPv6:${d.slice(6).toLowerCase()}`;
  return isAsciiOnly(d) ? d.toLowerCase() : d.normalize('NFC').toLowerCase();
}

/**
 * The A-label (ASCII) form of a domain, for DNS and for comparing domains written with
 * U-labels or A-labels; address literals are returned unchanged. null if not a valid domain.
 */
export function domainToAscii(domain: string): string | null {
  if (domain.startsWith('[')) return domain;
  const parsed = parseDomain(domain);
  return parsed.ok ? parsed.value.ascii : null;
}

/** "local@domain", or just "local" for the bare <Postmaster> (domain ''). */
export function formatMailbox(m: Mailbox): string {
  return m.domain === '' ? m.local : `${m.local}@${m.domain}`;
}

/**
 * The semantic value of a local part: a quoted-string loses its quotes and its quoted-pairs
 * are resolved (`"a\"b"` gives `a"b`); a dot-string is returned unchanged.
 */
export function unquoteLocal(local: string): string {
  if (local.length >= 2 && local.startsWith('"') && local.endsWith('"')) {
    return local.slice(1, -1).replace(/\\([\s\S])/g, '$1');
  }
  return local;
}

/**
 * Splits the argument text of MAIL FROM: / RCPT TO: (what follows the colon) into the path
 * (with its angle brackets) and the parameter text (spaces trimmed). One space before '<' is
 * tolerated (a common client habit, RFC 5321 4.1.2 has none). The closing '>' is found outside
 * quoted strings. null when there is no <…>, when the quoted string or the brackets are not
 * closed, or when something other than a space follows the '>'.
 */
export function splitPathAndParams(args: string): { path: string; params: string } | null {
  const start = args.startsWith(' ') ? 1 : 0;
  if (args[start] !== '<') return null;
  let inQuote = false;
  for (let i = start + 1; i < args.length; i++) {
    const c = args[i];
    if (inQuote) {
      if (c === '\\') i++;
      else if (c === '"') inQuote = false;
      continue;
    }
    if (c === '"') {
      inQuote = true;
    } else if (c === '>') {
      const rest = args.slice(i + 1);
      if (rest !== '' && !rest.startsWith(' ')) return null;
      return { path: args.slice(start, i + 1), params: rest.replace(/^ +| +$/g, '') };
    }
  }
  return null;
}

/** RFC 5321 4.1.2 Reverse-path = Path / "<>". The null path "<>" gives mailbox null. */
export function parseReversePath(text: string, opts: AddressOptions): ReversePathResult {
  const r = parsePath(text, opts, false);
  return r.ok ? { ok: true, mailbox: r.value } : r;
}

/**
 * RFC 5321 4.1.2 Forward-path = Path, plus "<Postmaster>" without a domain (4.1.1.3, any case),
 * which gives { local: 'postmaster', domain: '' }.
 */
export function parseForwardPath(text: string, opts: AddressOptions): ForwardPathResult {
  const r = parsePath(text, opts, true);
  if (!r.ok) return r;
  if (r.value === null) return syntax('empty forward-path');
  return { ok: true, mailbox: r.value };
}

function parsePath(text: string, opts: AddressOptions, forward: boolean): Step<Mailbox | null> {
  if (FORBIDDEN.test(text)) return syntax('control character in address');
  if (text.length < 2 || !text.startsWith('<') || !text.endsWith('>')) {
    return syntax('address must be enclosed in angle brackets');
  }
  if (octets(text) > MAX_PATH_OCTETS) return syntax(`path longer than ${MAX_PATH_OCTETS} octets`);
  let inner = text.slice(1, -1);
  if (inner === '') return { ok: true, value: null };
  if (forward && inner.toLowerCase() === 'postmaster') {
    return { ok: true, value: { local: 'postmaster', domain: '' } };
  }

  // RFC 5321 4.1.1.3 / appendix C: a source route "@a,@b:" is accepted and ignored; the mail
  // goes to the mailbox after the colon, which is therefore the only domain we return.
  if (inner.startsWith('@') && inner.includes(':')) {
    const colon = inner.indexOf(':');
    for (const hop of inner.slice(0, colon).split(',')) {
      if (!hop.startsWith('@')) return syntax('invalid source route');
      const d = parseDomain(hop.slice(1));
      if (!d.ok) return syntax('invalid source route');
    }
    inner = inner.slice(colon + 1);
  }

  const mailbox = parseMailbox(inner);
  if (!mailbox.ok) return mailbox;
  // RFC 6531 3.4: non-ASCII in a path needs SMTPUTF8 on the transaction. Checked after the
  // grammar, so a malformed path is reported as such.
  if (!opts.smtputf8 && !isAsciiOnly(text)) {
    return { ok: false, error: { kind: 'needs-smtputf8', detail: 'non-ASCII address requires SMTPUTF8' } };
  }
  return mailbox;
}

/** RFC 5321 Mailbox = Local-part "@" ( Domain / address-literal ), with RFC 6531 extensions. */
function parseMailbox(s: string): Step<Mailbox> {
  const local = parseLocalPart(s);
  if (!local.ok) return local;
  const rest = s.slice(local.value.length);
  if (rest === '' || rest === '@') return syntax('missing domain');
  if (!rest.startsWith('@')) {
    return syntax(
      local.value.startsWith('"') ? 'text after quoted local part' : 'invalid character in local part',
    );
  }
  const domainText = rest.slice(1);
  if (domainText.startsWith('[')) {
    const lit = parseAddressLiteral(domainText);
    return lit.ok ? { ok: true, value: { local: local.value, domain: lit.value } } : lit;
  }
  const domain = parseDomain(domainText);
  return domain.ok ? { ok: true, value: { local: local.value, domain: domain.value.normalized } } : domain;
}

/**
 * RFC 5321 Local-part = Dot-string / Quoted-string (RFC 6531: both may hold UTF-8). Returns the
 * local part exactly as it appears at the start of `s`.
 */
function parseLocalPart(s: string): Step<string> {
  let end: number;
  if (s.startsWith('"')) {
    end = -1;
    for (let i = 1; i < s.length; i++) {
      const code = s.charCodeAt(i);
      if (code === 0x5c) {
        // quoted-pairSMTP = %d92 %d32-126
        const next = s.charCodeAt(i + 1);
        if (!(next >= 0x20 && next <= 0x7e)) return syntax('invalid quoted pair in local part');
        i++;
      } else if (code === 0x22) {
        end = i + 1;
        break;
      } else if (!(code >= 0x20 && code <= 0x7e) && code < 0x80) {
        // qtextSMTP = %d32-33 / %d35-91 / %d93-126 / UTF8-non-ascii; controls already refused.
        return syntax('invalid character in local part');
      }
    }
    if (end === -1) return syntax('unterminated quoted string');
    if (end === 2) return syntax('empty local part');
  } else {
    end = 0;
    while (end < s.length) {
      const ch = s.charAt(end);
      const code = ch.charCodeAt(0);
      const ok = ch === '.' || ATEXT.test(ch) || (code >= 0x80 && !UNICODE_SPACE.test(ch));
      if (!ok) break;
      end++;
    }
    const dotString = s.slice(0, end);
    if (dotString === '') return syntax('empty local part');
    // Dot-string = Atom *("." Atom)
    if (dotString.startsWith('.') || dotString.endsWith('.') || dotString.includes('..')) {
      return syntax('misplaced dot in local part');
    }
  }
  const local = s.slice(0, end);
  if (octets(local) > MAX_LOCAL_OCTETS) return syntax(`local part longer than ${MAX_LOCAL_OCTETS} octets`);
  return { ok: true, value: local };
}

/**
 * RFC 5321 Domain = sub-domain *("." sub-domain), RFC 6531 sub-domain =/ U-label. A U-label is
 * accepted only when IDNA (UTS #46, via node:url) maps it to a valid A-label and back to the
 * same text (NFC, lower-cased): a label that IDNA would silently rewrite (full-width letters,
 * "ẞ", ideographic full stops) is refused, so the domain we return is the domain DNS will see.
 */
function parseDomain(d: string): Step<{ normalized: string; ascii: string }> {
  if (d === '') return syntax('missing domain');
  if (d.endsWith('.')) return syntax('domain ends with a dot');
  const normalizedLabels: string[] = [];
  const asciiLabels: string[] = [];
  for (const label of d.split('.')) {
    if (label === '') return syntax('empty label in domain');
    let ascii: string;
    let normalized: string;
    if (isAsciiOnly(label)) {
      if (!LDH_LABEL.test(label)) return syntax('invalid character in domain');
      ascii = label.toLowerCase();
      normalized = ascii;
      // An A-label must decode: refuse "xn--" labels that are not valid Punycode/IDNA.
      if (ascii.startsWith('xn--') && domainToASCII(ascii) !== ascii) {
        return syntax('invalid internationalized domain label');
      }
    } else {
      normalized = normalizeDomain(label);
      ascii = domainToASCII(label);
      if (
        ascii === '' ||
        !ascii.startsWith('xn--') ||
        !LDH_LABEL.test(ascii) ||
        domainToUnicode(ascii) !== normalized
      ) {
        return syntax('invalid internationalized domain label');
      }
    }
    if (ascii.length > MAX_LABEL_OCTETS) return syntax(`domain label longer than ${MAX_LABEL_OCTETS} octets`);
    normalizedLabels.push(normalized);
    asciiLabels.push(ascii);
  }
  const ascii = asciiLabels.join('.');
  if (ascii.length > MAX_DOMAIN_OCTETS) return syntax(`domain longer than ${MAX_DOMAIN_OCTETS} octets`);
  return { ok: true, value: { normalized: normalizedLabels.join('.'), ascii } };
}

/**
 * RFC 5321 4.1.3 address-literal: "[" IPv4 / "IPv6:" IPv6 / General-address-literal "]".
 * No general tag is registered that we could deliver to, so those are refused.
 */
function parseAddressLiteral(s: string): Step<string> {
  if (!s.endsWith(']') || s.length < 3) return syntax('invalid address literal');
  const content = s.slice(1, -1);
  if (/^ipv6:/i.test(content)) {
    const addr = content.slice(5);
    if (!IPV6_CHARS.test(addr) || !isIPv6(addr)) return syntax('invalid IPv6 address literal');
    return { ok: true, value: normalizeDomain(`[${content}]`) };
  }
  if (isIPv4(content)) return { ok: true, value: `[${content}]` };
  if (GENERAL_LITERAL.test(content)) return syntax('unsupported address literal');
  return syntax('invalid address literal');
}
