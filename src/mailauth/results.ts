/**
 * The results of the inbound checks as typed data, and their rendering as the one
 * Authentication-Results field Sterna adds (RFC 8601 2.2, 2.7). The words of the field, the
 * replies and the log lines are rendered from these records, never parsed back out of text.
 * Pure; no I/O. Trust level: domains, selectors and reasons come from untrusted mail and DNS,
 * so every value is rendered as an RFC 8601 value (token or quoted-string) and every comment
 * is stripped of what could end it.
 */

/** RFC 7208 2.6 (and RFC 8601 2.7.2). */
export type SpfResult = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'permerror' | 'temperror';

export interface SpfOutcome {
  result: SpfResult;
  /** Which identity was checked: MAIL FROM, or HELO when MAIL FROM is <> (RFC 7208 2.4). */
  identity: 'mailfrom' | 'helo';
  /** The checked address (mailfrom: sender or postmaster@helo) or HELO name. */
  value: string;
  /** The domain whose record was evaluated. */
  domain: string;
  /** Why, in plain words (a comment in the field; the log). */
  reason: string;
  /** RFC 7208 6.2: the domain's explanation (exp=), for a fail only. */
  explanation?: string;
}

/** RFC 8601 2.7.1. */
export type DkimResult = 'pass' | 'fail' | 'neutral' | 'policy' | 'none' | 'permerror' | 'temperror';

export interface DkimOutcome {
  result: DkimResult;
  /** d= (absent for "none"). */
  domain?: string;
  /** s= */
  selector?: string;
  /** a= */
  algorithm?: string;
  /** The first 8 characters of b= (RFC 6008 header.b), to tell signatures apart. */
  b?: string;
  reason?: string;
}

/** RFC 7489 11.2. */
export type DmarcResult = 'pass' | 'fail' | 'none' | 'temperror' | 'permerror';
export type DmarcPolicy = 'none' | 'quarantine' | 'reject';

export interface DmarcOutcome {
  result: DmarcResult;
  /** The RFC5322.From domain (header.from). */
  fromDomain?: string;
  /** The policy that applies (p, or sp for a subdomain under an organizational record). */
  policy?: DmarcPolicy;
  p?: DmarcPolicy;
  sp?: DmarcPolicy;
  /** RFC 7489 6.3 pct (default 100). */
  pct?: number;
  /** What the policy asks for this message after pct sampling (RFC 7489 6.6.4). */
  disposition: DmarcPolicy;
  reason?: string;
  /** The published record, for aggregate reports (RFC 7489 7.2): present when one was found. */
  record?: DmarcRecordInfo;
  /** RFC 7489 Appendix C policy_evaluated: did SPF / a DKIM signature pass aligned with From? */
  aligned?: { spf: boolean; dkim: boolean };
  /** The message fell outside the pct sample: the weaker policy applied (RFC 7489 6.6.4). */
  sampledOut?: boolean;
}

/** The DMARC record a message was evaluated against (RFC 7489 6.3 tags; Appendix C policy_published). */
export interface DmarcRecordInfo {
  /** The domain at which the record was found: the From domain or its organizational domain. */
  domain: string;
  /** The From domain's organizational domain (the Public Suffix List, as DMARC uses it). */
  orgDomain: string;
  adkim: 'r' | 's';
  aspf: 'r' | 's';
  /** fo= as published (default "0"). */
  fo: string;
  /** rua= URIs as published (RFC 7489 6.2 dmarc-uri, with any !size). */
  rua: string[];
}

/** RFC 8617 4.4 (cv values and arc= results). */
export type ArcResult = 'pass' | 'fail' | 'none';

export interface ArcOutcome {
  result: ArcResult;
  /** The highest instance (i=) of the chain. */
  instance?: number;
  reason?: string;
}

export interface AuthResults {
  spf: SpfOutcome;
  dkim: DkimOutcome[];
  dmarc: DmarcOutcome;
  arc: ArcOutcome;
}

/** RFC 2045 5.1 token characters (and RFC 6531 UTF-8, which RFC 8601 2.2 allows in values). */
const TOKEN = /^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~\u0080-\uffff]+$/;

/** An RFC 8601 value: a token when it is one, else a quoted-string. */
export function arValue(text: string): string {
  // RFC 1035 2.3.4: no domain name is longer; nothing we render needs more.
  const clean = stripControls(text).slice(0, 255);
  if (TOKEN.test(clean)) return clean;
  return `"${clean.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/**
 * An address for smtp.mailfrom (RFC 8601 2.7.2: [local-part "@"] domain-name): as it is when
 * its local part is a dot-atom, else with the local part quoted.
 */
function arMailbox(address: string): string {
  const clean = stripControls(address);
  const at = clean.lastIndexOf('@');
  if (at < 0) return arValue(clean);
  const local = clean.slice(0, at);
  const domain = clean.slice(at + 1);
  const dotAtom =
    /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\uffff]+(\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\uffff]+)*$/;
  const localOut = dotAtom.test(local) ? local : `"${local.replace(/["\\]/g, (c) => `\\${c}`)}"`;
  return `${localOut}@${arValue(domain)}`;
}

/** A comment (RFC 5322 3.2.2) whose text cannot close or nest it; at most 200 characters. */
export function arComment(text: string): string {
  const clean = stripControls(text)
    .replace(/[()\\]/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  const short = clean.length > 200 ? `${clean.slice(0, 197)}...` : clean;
  return short === '' ? '' : ` (${short})`;
}

function stripControls(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f]/g, ' ');
}

export function renderSpf(spf: SpfOutcome): string {
  const prop =
    spf.identity === 'mailfrom' ? `smtp.mailfrom=${arMailbox(spf.value)}` : `smtp.helo=${arValue(spf.value)}`;
  return `spf=${spf.result}${arComment(spf.reason)} ${prop}`;
}

export function renderDkim(d: DkimOutcome): string {
  let out = `dkim=${d.result}${arComment(d.reason ?? '')}`;
  if (d.domain !== undefined && d.domain !== '') out += ` header.d=${arValue(d.domain)}`;
  if (d.selector !== undefined && d.selector !== '') out += ` header.s=${arValue(d.selector)}`;
  if (d.algorithm !== undefined && d.algorithm !== '') out += ` header.a=${arValue(d.algorithm)}`;
  if (d.b !== undefined && d.b !== '') out += ` header.b=${arValue(d.b)}`;
  return out;
}

export function renderDmarc(d: DmarcOutcome): string {
  const policy =
    d.p === undefined
      ? ''
      : `p=${d.p} sp=${d.sp ?? d.p} pct=${d.pct ?? 100} dis=${d.disposition}` +
        (d.reason !== undefined ? `; ${d.reason}` : '');
  const comment = policy !== '' ? arComment(policy) : arComment(d.reason ?? '');
  const from =
    d.fromDomain !== undefined && d.fromDomain !== '' ? ` header.from=${arValue(d.fromDomain)}` : '';
  return `dmarc=${d.result}${comment}${from}`;
}

export function renderArc(a: ArcOutcome): string {
  const comment = a.reason ?? (a.instance !== undefined ? `i=${a.instance}` : '');
  return `arc=${a.result}${arComment(comment)}`;
}

/**
 * The whole field, CRLF-terminated: authserv-id, then one resinfo per line (RFC 5322 2.2.3
 * folding; every line well under 998 octets), in the order spf, dkim (one per signature),
 * dmarc, arc.
 */
export function formatAuthResults(authservId: string, r: AuthResults): string {
  const parts = [renderSpf(r.spf), ...r.dkim.map(renderDkim), renderDmarc(r.dmarc), renderArc(r.arc)];
  return `Authentication-Results: ${arValue(authservId)};\r\n ${parts.join(';\r\n ')}\r\n`;
}
