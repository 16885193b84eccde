/**
 * One DMARC evaluation as the aggregate reports need it (RFC 7489 7.2, Appendix C): the
 * source address, the identifiers, the SPF and DKIM results with their domains, the DMARC-aligned
 * results, the disposition Sterna applied (not only what the policy asked) with the reasons when
 * they differ, and the policy published. One JSON line in the store (dmarc-report-store.ts) per
 * message. Pure. Trust level: every domain, selector and result describes untrusted mail and DNS;
 * the report writer escapes them.
 */
import type { Decision } from './policy.js';
import type { AuthResults, DkimResult, DmarcPolicy, SpfResult } from './results.js';

/** RFC 7489 Appendix C PolicyOverrideType. */
export type OverrideType =
  'forwarded' | 'sampled_out' | 'trusted_forwarder' | 'mailing_list' | 'local_policy' | 'other';

export interface DmarcEvaluation {
  /** When, ms since the epoch. */
  t: number;
  /** The connecting client (row source_ip). */
  ip: string;
  /** header.from: the RFC5322.From domain. */
  from: string;
  /** The RFC5321.MailFrom domain ('' for <>). */
  mfrom: string;
  /** policy_published. */
  policy: {
    domain: string;
    /** The From domain's organizational domain (the §7.1 check compares report addresses with it). */
    org: string;
    adkim: 'r' | 's';
    aspf: 'r' | 's';
    p: DmarcPolicy;
    sp: DmarcPolicy;
    pct: number;
    fo: string;
    rua: string[];
  };
  /** policy_evaluated: the disposition applied, the DMARC-aligned results, why they differ. */
  disposition: DmarcPolicy;
  dkimAligned: 'pass' | 'fail';
  spfAligned: 'pass' | 'fail';
  reasons: { type: OverrideType; comment?: string }[];
  /** auth_results, uninterpreted: one entry per signature, and the SPF identity checked. */
  dkim: { d: string; s?: string; r: DkimResult }[];
  spf: { d: string; scope: 'mfrom' | 'helo'; r: SpfResult };
}

/** What Sterna did with the message, as an RFC 7489 disposition; null: not received (deferred). */
function applied(d: Decision): DmarcPolicy | null {
  switch (d.kind) {
    case 'accept':
      return 'none';
    case 'junk':
      return 'quarantine';
    case 'refuse':
      return 'reject';
    case 'defer':
      return null;
    default: {
      const never: never = d;
      throw new Error(`unhandled decision ${JSON.stringify(never)}`);
    }
  }
}

/**
 * The evaluation of one message, or null when there is nothing to report: no DMARC record was
 * found (nobody asked for reports), or the message was deferred (it will be evaluated again when
 * the sender retries).
 */
export function evaluationOf(
  r: AuthResults,
  d: Decision,
  ctx: { ip: string; sender: string; now: number },
): DmarcEvaluation | null {
  const dm = r.dmarc;
  const disposition = applied(d);
  if (dm.record === undefined || dm.fromDomain === undefined || disposition === null) return null;
  const reasons: DmarcEvaluation['reasons'] = [];
  if (dm.sampledOut === true) reasons.push({ type: 'sampled_out' });
  if (d.kind === 'accept' && d.reason === 'exempt')
    reasons.push({ type: 'local_policy', comment: 'source on the receiver allow list' });
  else if (dm.result === 'fail' && disposition !== dm.disposition)
    reasons.push({ type: 'local_policy', comment: `receiver applies ${disposition} for this policy` });
  else if (dm.result === 'temperror')
    reasons.push({ type: 'other', comment: 'temporary DNS failure during the checks' });
  else if (d.kind === 'refuse' && dm.result !== 'fail')
    reasons.push({ type: 'local_policy', comment: `refused by the receiver (${d.reason})` });
  const at = ctx.sender.lastIndexOf('@');
  return {
    t: ctx.now,
    ip: ctx.ip,
    from: dm.fromDomain,
    mfrom: at >= 0 ? ctx.sender.slice(at + 1).toLowerCase() : '',
    policy: {
      domain: dm.record.domain,
      org: dm.record.orgDomain,
      adkim: dm.record.adkim,
      aspf: dm.record.aspf,
      p: dm.p ?? 'none',
      sp: dm.sp ?? dm.p ?? 'none',
      pct: dm.pct ?? 100,
      fo: dm.record.fo,
      rua: dm.record.rua,
    },
    disposition,
    dkimAligned: dm.aligned?.dkim === true ? 'pass' : 'fail',
    spfAligned: dm.aligned?.spf === true ? 'pass' : 'fail',
    reasons,
    dkim: r.dkim
      .filter((x) => x.domain !== undefined && x.domain !== '')
      .map((x) => ({
        d: x.domain ?? '',
        ...(x.selector !== undefined ? { s: x.selector } : {}),
        r: x.result,
      })),
    spf: { d: r.spf.domain, scope: r.spf.identity === 'helo' ? 'helo' : 'mfrom', r: r.spf.result },
  };
}
