/**
 * ESMTP parameters of MAIL FROM and RCPT TO (RFC 5321 4.1.2 esmtp-param): SIZE (RFC 1870),
 * BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531), RET and ENVID (RFC 3461), NOTIFY and ORCPT
 * (RFC 3461), and the xtext encoding (RFC 3461 4). Pure: no I/O.
 *
 * Trust: the text comes from an unauthenticated peer. Every value is checked against its
 * grammar; the first problem found, reading left to right, is returned. Keywords are
 * case-insensitive; enumerated values are returned in their canonical upper-case spelling.
 * Decoded xtext values (ENVID, ORCPT) must be printable US-ASCII (RFC 3461 4.2, 4.4), so they
 * can never smuggle CR, LF or NUL into a DSN or a log line.
 */

import type { BodyType, MailParams, NotifyValue, RcptParams } from '../message/envelope.js';

/**
 * Why the parameters were refused: an unknown keyword (the session replies 555 5.5.4, naming
 * `param`, upper-cased) or a malformed value (501 5.5.4 with `detail`, short plain English that
 * never echoes a client value).
 */
export type ParamError = { kind: 'unknown'; param: string } | { kind: 'syntax'; detail: string };

export type MailParamsResult = { ok: true; params: MailParams } | { ok: false; error: ParamError };
export type RcptParamsResult = { ok: true; params: RcptParams } | { ok: false; error: ParamError };

/** RFC 1870: size-value = 1*20DIGIT. */
const SIZE_VALUE = /^[0-9]{1,20}$/;
/** RFC 3461 4.4: the ENVID value may hold at most 100 characters (we count them as sent, in xtext). */
const MAX_ENVID_CHARS = 100;
/** RFC 3461 4.2 / 5: ORCPT adds at most 500 characters to RCPT (we count the value as sent). */
const MAX_ORCPT_CHARS = 500;
/** RFC 5321 esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"). */
const KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/;
/**
 * RFC 5321 esmtp-value = 1*(%d33-60 / %d62-126); RFC 6531 adds UTF8-non-ascii, of which we
 * refuse C1 controls, unpaired surrogates and Unicode spaces and line separators.
 */
const VALUE = /^(?:[\x21-\x3c\x3e-\x7e]|[^\x00-\x9f\p{Cs}\p{Z}])+$/u;
/** RFC 3461 addr-type = atom (RFC 5322 atext). */
const ATOM = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+$/;
/** Printable US-ASCII (graphic and space): what a decoded ENVID or ORCPT may contain. */
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

const BODY_TYPES: readonly BodyType[] = ['7BIT', '8BITMIME', 'BINARYMIME'];
const NOTIFY_LIST: readonly NotifyValue[] = ['SUCCESS', 'FAILURE', 'DELAY'];

interface RawParam {
  /** Upper-cased keyword. */
  keyword: string;
  /** The value after '=', or undefined when the parameter had no '='. */
  value: string | undefined;
}

type Failure = { ok: false; error: ParamError };

function syntax(detail: string): Failure {
  return { ok: false, error: { kind: 'syntax', detail } };
}

/**
 * Splits "KEY[=value] KEY[=value] …" into keywords and values, checking the RFC 5321 grammar
 * of each and refusing a keyword given twice. Runs of spaces are tolerated.
 */
function tokenize(text: string): { ok: true; list: RawParam[] } | Failure {
  const list: RawParam[] = [];
  const seen = new Set<string>();
  for (const token of text.split(' ')) {
    if (token === '') continue;
    const eq = token.indexOf('=');
    const keyword = (eq === -1 ? token : token.slice(0, eq)).toUpperCase();
    const value = eq === -1 ? undefined : token.slice(eq + 1);
    if (!KEYWORD.test(keyword)) return syntax('invalid parameter keyword');
    if (value !== undefined) {
      if (value === '') return syntax(`${keyword} has an empty value`);
      if (!VALUE.test(value)) return syntax(`${keyword} has an invalid value`);
    }
    if (seen.has(keyword)) return syntax(`${keyword} given more than once`);
    seen.add(keyword);
    list.push({ keyword, value });
  }
  return { ok: true, list };
}

/**
 * Parses the parameters of MAIL FROM. SIZE is returned as declared: comparing it with the
 * configured maximum (and replying 552 5.3.4) is the session's job, so `_opts.maxSize` is not
 * used here. Empty text gives {}.
 */
export function parseMailParams(params: string, _opts: { maxSize: number }): MailParamsResult {
  const tokens = tokenize(params);
  if (!tokens.ok) return tokens;
  const out: MailParams = {};
  for (const { keyword, value } of tokens.list) {
    switch (keyword) {
      case 'SIZE':
        if (value === undefined) return syntax('SIZE needs a value');
        if (!SIZE_VALUE.test(value)) return syntax('SIZE must be 1 to 20 digits');
        out.size = Number(value);
        break;
      case 'BODY': {
        if (value === undefined) return syntax('BODY needs a value');
        const body = BODY_TYPES.find((b) => b === value.toUpperCase());
        if (body === undefined) return syntax('BODY must be 7BIT, 8BITMIME or BINARYMIME');
        out.body = body;
        break;
      }
      case 'SMTPUTF8':
        if (value !== undefined) return syntax('SMTPUTF8 takes no value');
        out.smtputf8 = true;
        break;
      case 'RET': {
        if (value === undefined) return syntax('RET needs a value');
        const ret = value.toUpperCase();
        if (ret !== 'FULL' && ret !== 'HDRS') return syntax('RET must be FULL or HDRS');
        out.ret = ret;
        break;
      }
      case 'ENVID': {
        if (value === undefined) return syntax('ENVID needs a value');
        if (value.length > MAX_ENVID_CHARS) return syntax(`ENVID longer than ${MAX_ENVID_CHARS} characters`);
        const envid = decodeXtext(value);
        if (envid === null) return syntax('ENVID is not valid xtext');
        if (!PRINTABLE_ASCII.test(envid)) return syntax('ENVID must be printable ASCII');
        out.envid = envid;
        break;
      }
      default:
        return { ok: false, error: { kind: 'unknown', param: keyword } };
    }
  }
  return { ok: true, params: out };
}

/** Parses the parameters of RCPT TO (RFC 3461 NOTIFY and ORCPT). Empty text gives {}. */
export function parseRcptParams(params: string): RcptParamsResult {
  const tokens = tokenize(params);
  if (!tokens.ok) return tokens;
  const out: RcptParams = {};
  for (const { keyword, value } of tokens.list) {
    switch (keyword) {
      case 'NOTIFY': {
        if (value === undefined) return syntax('NOTIFY needs a value');
        const notify = parseNotify(value);
        if (!notify.ok) return notify;
        out.notify = notify.value;
        break;
      }
      case 'ORCPT': {
        if (value === undefined) return syntax('ORCPT needs a value');
        const orcpt = parseOrcpt(value);
        if (!orcpt.ok) return orcpt;
        out.orcpt = orcpt.value;
        break;
      }
      default:
        return { ok: false, error: { kind: 'unknown', param: keyword } };
    }
  }
  return { ok: true, params: out };
}

/** RFC 3461 4.1: notify-esmtp-value = "NEVER" / 1#notify-list-element. */
function parseNotify(value: string): { ok: true; value: NotifyValue[] } | Failure {
  const items = value.toUpperCase().split(',');
  if (items.length === 1 && items[0] === 'NEVER') return { ok: true, value: ['NEVER'] };
  const result: NotifyValue[] = [];
  for (const item of items) {
    if (item === 'NEVER') return syntax('NOTIFY=NEVER cannot be combined with other values');
    const v = NOTIFY_LIST.find((n) => n === item);
    if (v === undefined) return syntax('NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY');
    if (result.includes(v)) return syntax(`NOTIFY lists ${v} twice`);
    result.push(v);
  }
  return { ok: true, value: result };
}

/** RFC 3461 4.2: original-recipient-address = addr-type ";" xtext. */
function parseOrcpt(value: string): { ok: true; value: { type: string; address: string } } | Failure {
  if (value.length > MAX_ORCPT_CHARS) return syntax(`ORCPT longer than ${MAX_ORCPT_CHARS} characters`);
  const semi = value.indexOf(';');
  if (semi === -1) return syntax('ORCPT must be addr-type;address');
  const type = value.slice(0, semi);
  if (!ATOM.test(type)) return syntax('ORCPT has an invalid address type');
  const address = decodeXtext(value.slice(semi + 1));
  if (address === null) return syntax('ORCPT address is not valid xtext');
  if (address === '') return syntax('ORCPT address is empty');
  if (!PRINTABLE_ASCII.test(address)) return syntax('ORCPT address must be printable ASCII');
  return { ok: true, value: { type: type.toLowerCase(), address } };
}

/**
 * Decodes RFC 3461 4 xtext: xchar is "!" to "~" except "+" and "=", and "+" followed by two
 * upper-case hex digits stands for that octet. The octets are read as UTF-8. null if the text
 * is not xtext (bad character, lower-case or short hex escape) or the octets are not UTF-8.
 */
export function decodeXtext(s: string): string | null {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const code = s.charCodeAt(i);
    if (code === 0x2b) {
      const hex = s.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) return null;
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else if (code >= 0x21 && code <= 0x7e && code !== 0x3d) {
      bytes.push(code);
    } else {
      return null;
    }
  }
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(new Uint8Array(bytes));
  } catch {
    return null;
  }
}

/**
 * Encodes text as RFC 3461 xtext: octets "!" to "~" other than "+" and "=" are kept, every
 * other octet of the UTF-8 encoding becomes "+XX" (upper-case hex).
 */
export function encodeXtext(s: string): string {
  let out = '';
  for (const byte of Buffer.from(s, 'utf8')) {
    if (byte >= 0x21 && byte <= 0x7e && byte !== 0x2b && byte !== 0x3d) out += String.fromCharCode(byte);
    else out += `+${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}
