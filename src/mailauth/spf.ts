/**
 * SPF (RFC 7208) for one SMTP transaction, through mailauth: the MAIL FROM identity, or the
 * HELO identity when MAIL FROM is <> (2.4: then "postmaster@" the HELO name is checked). All
 * seven results (2.6), the 10-lookup and 2-void-lookup limits (4.6.4) and macros (7) are
 * mailauth's; a DNS failure (our resolver maps it to ETIMEOUT) is temperror.
 *
 * mailauth ignores the exp= modifier (it parses and skips it). RFC 7208 6.2 asks that a fail
 * come with the domain's explanation, so it is done here: the exp= of the evaluated domain's
 * record is expanded (macros, RFC 7208 7, with mailauth's macro expander), its TXT record is
 * fetched (one more lookup, not counted against the limits, 6.2), its macros are expanded, and
 * the text, stripped to printable ASCII and 256 characters, goes into the 550 reply. Any
 * problem on the way means no explanation, never a different result (6.2). Only the top-level
 * record's exp= is used (6.2: an included record's exp= must not be; for a redirect= the
 * target's exp= would apply, which is not done: the top-level one, if any, is used).
 * Trust level: everything here comes from the client or its DNS.
 */
import { spf, type DNSResolver, type SPFResult } from 'mailauth';
import macro from 'mailauth/lib/spf/macro.js';
import type { SpfOutcome, SpfResult } from './results.js';

export interface SpfInput {
  /** MAIL FROM; '' for <>. */
  sender: string;
  helo: string;
  ip: string;
  /** Our host name, for the %{r} macro. */
  mta: string;
  resolver: DNSResolver;
}

const RESULTS: readonly SpfResult[] = [
  'pass',
  'fail',
  'softfail',
  'neutral',
  'none',
  'permerror',
  'temperror',
];

function asResult(r: string): SpfResult {
  return RESULTS.find((x) => x === r) ?? 'temperror';
}

export async function checkSpf(input: SpfInput): Promise<SpfOutcome> {
  const identity = input.sender === '' ? 'helo' : 'mailfrom';
  const helo = input.helo.replace(/^\[(.*)\]$/, '$1');
  const base = {
    identity,
    value: identity === 'helo' ? input.helo : input.sender,
  } as const;
  let res: SPFResult;
  try {
    res = await spf({
      ...(input.sender !== '' ? { sender: input.sender } : {}),
      ip: input.ip,
      helo,
      mta: input.mta,
      resolver: input.resolver,
    });
  } catch (err) {
    return {
      ...base,
      result: 'temperror',
      domain: '',
      reason: `SPF check failed: ${err instanceof Error ? err.message : String(err)}`,
    };
  }
  const result = asResult(res.status.result);
  const outcome: SpfOutcome = {
    ...base,
    result,
    domain: res.domain,
    reason: (res.status.comment ?? result).replace(/^[^:]*: /, ''),
  };
  if (result === 'fail' && res.rr !== undefined) {
    const explanation = await explain(res.rr, {
      sender: res['envelope-from'] ?? input.sender,
      ip: input.ip,
      helo,
      mta: input.mta,
      resolver: input.resolver,
    });
    if (explanation !== null) outcome.explanation = explanation;
  }
  return outcome;
}

/** RFC 7208 6.2: the explanation string of a fail, or null when there is none to give. */
async function explain(
  record: string,
  ctx: { sender: string; ip: string; helo: string; mta: string; resolver: DNSResolver },
): Promise<string | null> {
  const m = /(?:^|\s)exp=(\S+)/i.exec(record);
  if (m === null || m[1] === undefined) return null;
  try {
    const values = { sender: ctx.sender, ip: ctx.ip, helo: ctx.helo, mta: ctx.mta };
    const name = macro(m[1], values).replace(/\.$/, '');
    const txt = await ctx.resolver(name, 'TXT');
    // 6.2: exactly one TXT record, its character-strings joined with nothing between them.
    if (txt.length !== 1) return null;
    const row = txt[0];
    const text = Array.isArray(row) ? row.join('') : String(row);
    const expanded = macro(text, values);
    const clean = expanded
      .replace(/[^\x20-\x7e]/g, '')
      .trim()
      .slice(0, 256);
    return clean === '' ? null : clean;
  } catch {
    return null;
  }
}
