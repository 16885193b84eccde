/**
 * DMARC (RFC 7489) for the RFC5322.From domain, through mailauth: the record lookup (the From
 * domain, then its organizational domain, 6.6.3), relaxed and strict alignment of SPF and DKIM
 * (3.1; adkim/aspf), and p / sp. The organizational domain comes from the Public Suffix List
 * as bundled in tldts (pinned by mailauth; ICANN and private sections both: see
 * docs/mail-auth.md). Sterna adds what mailauth leaves out:
 *
 * - pct (6.3, 6.6.4): mailauth reads the tag but applies nothing (and reads a malformed pct as
 *   0). Here pct is read from the record text (1*3DIGIT, at most 100; absent or malformed: 100),
 *   and a failing message outside the sample gets the next weaker policy (reject ->
 *   quarantine, quarantine -> none).
 * - header.from is the From domain itself (RFC 7489 11.2), where mailauth reports the
 *   organizational domain.
 * - a message whose From has no domain, or several different domains (6.6.1), is permerror;
 *   mailauth returns nothing for it.
 * - a fail while SPF or a DKIM signature had a temporary DNS error is reported as temperror
 *   (the answer may well be a pass once DNS answers), so that a transient failure never turns
 *   into a permanent refusal.
 * Trust level: From, the record and the results describe untrusted mail.
 */
import { dmarc, type DNSResolver, type ARCResult } from 'mailauth';
import type { DkimOutcome, DmarcOutcome, DmarcPolicy, DmarcRecordInfo, SpfOutcome } from './results.js';

export interface DmarcInput {
  /** The addresses of the From field(s). */
  fromAddresses: readonly string[];
  spf: SpfOutcome;
  dkim: readonly DkimOutcome[];
  arc?: ARCResult;
  resolver: DNSResolver;
  /** In [0, 1): the pct sample draw. */
  random: () => number;
}

function policyOf(v: unknown): DmarcPolicy | undefined {
  return v === 'none' || v === 'quarantine' || v === 'reject' ? v : undefined;
}

/** RFC 7489 6.3: pct = 1*3DIGIT, 0 to 100; default 100. */
export function pctOf(record: string | undefined): number {
  const m = /(?:^|;)\s*pct\s*=\s*(\d{1,3})\s*(?:;|$)/i.exec(record ?? '');
  if (m === null || m[1] === undefined) return 100;
  return Math.min(100, Number(m[1]));
}

/** RFC 7489 6.3: a record's tag=value pairs, names lower-cased; the first of a repeated tag wins. */
export function dmarcTags(record: string): Map<string, string> {
  const tags = new Map<string, string>();
  for (const part of record.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim().toLowerCase();
    if (!tags.has(name)) tags.set(name, part.slice(eq + 1).trim());
  }
  return tags;
}

/** The record's reporting tags (rua, fo) and alignment modes, for aggregate reports (RFC 7489 7.2). */
function recordInfo(rr: string, domain: string, orgDomain: string): DmarcRecordInfo {
  const tags = dmarcTags(rr);
  const mode = (v: string | undefined): 'r' | 's' => (v?.toLowerCase() === 's' ? 's' : 'r');
  const rua = (tags.get('rua') ?? '')
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== '');
  return {
    domain,
    orgDomain,
    adkim: mode(tags.get('adkim')),
    aspf: mode(tags.get('aspf')),
    fo: tags.get('fo') ?? '0',
    rua,
  };
}

/**
 * The resolver, noting the domain whose _dmarc TXT record held a DMARC record: mailauth says
 * whether the record came from the From domain or its organizational domain only through this.
 */
function watchingResolver(resolver: DNSResolver): { resolver: DNSResolver; found: () => string | undefined } {
  let found: string | undefined;
  const watched: DNSResolver = async (name, type) => {
    const answer = await resolver(name, type);
    if (type.toUpperCase() === 'TXT' && name.toLowerCase().startsWith('_dmarc.')) {
      const rows = answer.map((row) => (Array.isArray(row) ? row.join('') : row).trim());
      if (rows.some((r) => /^v=DMARC1\b/i.test(r))) found = name.slice('_dmarc.'.length).toLowerCase();
    }
    return answer;
  };
  return { resolver: watched, found: () => found };
}

/** RFC 7489 6.6.4: outside the pct sample, the next weaker policy applies. */
function disposition(policy: DmarcPolicy, pct: number, draw: number): DmarcPolicy {
  if (draw * 100 < pct) return policy;
  return policy === 'reject' ? 'quarantine' : 'none';
}

export async function checkDmarc(input: DmarcInput): Promise<DmarcOutcome> {
  const domains = [...new Set(input.fromAddresses.map((a) => a.slice(a.lastIndexOf('@') + 1).toLowerCase()))];
  if (domains.length === 0 || domains[0] === '') {
    return { result: 'permerror', disposition: 'none', reason: 'no From address with a domain' };
  }
  if (domains.length > 1) {
    return { result: 'permerror', disposition: 'none', reason: 'From has addresses in several domains' };
  }
  const fromDomain = domains[0]!;
  const spfDomains = input.spf.result === 'pass' && input.spf.domain !== '' ? [input.spf.domain] : [];
  const dkimDomains = input.dkim
    .filter((d) => d.result === 'pass' && d.domain !== undefined)
    .map((d) => ({ domain: d.domain ?? '' }));
  let res;
  const watch = watchingResolver(input.resolver);
  try {
    res = await dmarc({
      headerFrom: fromDomain,
      spfDomains,
      dkimDomains,
      ...(input.arc !== undefined ? { arcResult: input.arc } : {}),
      resolver: watch.resolver,
    });
  } catch (err) {
    return {
      result: 'temperror',
      fromDomain,
      disposition: 'none',
      reason: err instanceof Error ? err.message : String(err),
    };
  }
  if (res === false)
    return { result: 'permerror', fromDomain, disposition: 'none', reason: 'From could not be read' };
  const status = res.status.result;
  if (status === 'none') return { result: 'none', fromDomain, disposition: 'none' };
  if (status === 'temperror' || status === 'temperr') {
    return { result: 'temperror', fromDomain, disposition: 'none', reason: 'DMARC record lookup failed' };
  }
  // RFC 7489 6.6.3: a record without a valid p (and no valid rua) is as if p=none.
  const policy = policyOf(res.policy) ?? 'none';
  const p = policyOf(res.p) ?? 'none';
  const sp = policyOf(res.sp) ?? p;
  const pct = pctOf(res.rr);
  const orgDomain = typeof res.domain === 'string' && res.domain !== '' ? res.domain : fromDomain;
  const record = recordInfo(res.rr ?? '', watch.found() ?? orgDomain, orgDomain);
  const aligned = { spf: Boolean(res.alignment?.spf?.result), dkim: Boolean(res.alignment?.dkim?.result) };
  const base = { fromDomain, policy, p, sp, pct, record, aligned };
  if (status === 'pass') return { ...base, result: 'pass', disposition: 'none' };
  const transient = input.spf.result === 'temperror' || input.dkim.some((d) => d.result === 'temperror');
  if (transient) {
    return { ...base, result: 'temperror', disposition: 'none', reason: 'SPF or DKIM had a DNS failure' };
  }
  const dis = disposition(policy, pct, input.random());
  return { ...base, result: 'fail', disposition: dis, ...(dis !== policy ? { sampledOut: true } : {}) };
}
