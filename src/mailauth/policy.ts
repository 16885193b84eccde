/**
 * What Sterna does with a message once its authentication results are known: accept it (the
 * Authentication-Results field records the results: "mark"), refuse it, or ask the client to
 * try again later. Each rule is a [mailauth] config key with a safe default:
 *
 *   DMARC p=reject failing (after pct, RFC 7489 6.6.4)  dmarc_reject_action      "reject" | "junk" | "mark"
 *   DMARC p=quarantine failing                          dmarc_quarantine_action  "junk" | "mark" | "reject"
 *   SPF fail (RFC 7208 8.4), unless DMARC passes        spf_fail_action          "mark" | "reject"
 *   a temporary DNS error that leaves DMARC undecided   temperror_action         "accept" | "defer"
 *
 * "junk" accepts the message and delivers its local copies to the mailbox's Junk folder (Maildir++
 * .Junk, as a content filter's Junk verdict does): RFC 7489 6.3 quarantine, "treat with
 * suspicion". A message from an exempt source (the allow list) is never refused or deferred by these rules;
 * its results are still recorded. Pure: a decision is a typed record, the reply and the log line
 * are rendered from it elsewhere (check.ts). Trust level: the results describe untrusted mail.
 */
import type { AuthResults, DmarcPolicy } from './results.js';

export interface EnforcementConfig {
  dmarcRejectAction: 'reject' | 'junk' | 'mark';
  dmarcQuarantineAction: 'junk' | 'mark' | 'reject';
  spfFailAction: 'mark' | 'reject';
  temperrorAction: 'accept' | 'defer';
}

/** The rule that decided; stable ids for logs and metrics. */
export type DecisionReason =
  | 'pass'
  | 'no-policy'
  | 'dmarc-reject'
  | 'dmarc-quarantine'
  | 'spf-fail'
  | 'spf-temperror'
  | 'dmarc-temperror'
  | 'exempt';

export type Decision =
  | { kind: 'accept'; reason: DecisionReason; /** the rule would have refused or deferred */ marked: boolean }
  | { kind: 'refuse'; reason: 'dmarc-reject' | 'dmarc-quarantine' | 'spf-fail'; policy?: DmarcPolicy }
  /** Accepted, local copies to the Junk folder (DMARC quarantine). */
  | { kind: 'junk'; reason: 'dmarc-reject' | 'dmarc-quarantine' }
  | { kind: 'defer'; reason: 'spf-temperror' | 'dmarc-temperror' };

/** True when some check could not be made for a temporary reason and DMARC did not pass. */
function temporary(r: AuthResults): 'spf-temperror' | 'dmarc-temperror' | null {
  if (r.dmarc.result === 'pass') return null;
  if (r.dmarc.result === 'temperror') return 'dmarc-temperror';
  if (r.spf.result === 'temperror') return 'spf-temperror';
  if (r.dkim.some((d) => d.result === 'temperror')) return 'dmarc-temperror';
  return null;
}

type Rule = 'dmarc-reject' | 'dmarc-quarantine' | 'spf-fail';

/** The refusal rules that apply to `r`, most severe first. */
function rules(r: AuthResults): Rule[] {
  const out: Rule[] = [];
  if (r.dmarc.result === 'fail' && r.dmarc.disposition === 'reject') out.push('dmarc-reject');
  if (r.dmarc.result === 'fail' && r.dmarc.disposition === 'quarantine') out.push('dmarc-quarantine');
  // RFC 7489 10.1: an SPF fail is not acted on when DMARC passes (a forwarder, with DKIM intact).
  if (r.spf.result === 'fail' && r.dmarc.result !== 'pass') out.push('spf-fail');
  return out;
}

/** What the configuration says to do when `rule` applies. */
function actionOf(rule: Rule, cfg: EnforcementConfig): 'reject' | 'junk' | 'mark' {
  switch (rule) {
    case 'dmarc-reject':
      return cfg.dmarcRejectAction;
    case 'dmarc-quarantine':
      return cfg.dmarcQuarantineAction;
    case 'spf-fail':
      return cfg.spfFailAction;
    default: {
      const never: never = rule;
      throw new Error(`unhandled rule ${String(never)}`);
    }
  }
}

/**
 * A temporary failure comes first: while a check could not be made, no permanent refusal is
 * given (the answer may be a pass once the DNS answers). Then the first rule whose action is
 * "reject" refuses; else the first whose action is "junk" sends the message to Junk; a rule set
 * to "mark" only marks. An exempt source is only marked.
 */
export function decide(r: AuthResults, cfg: EnforcementConfig, exempt: boolean): Decision {
  const temp = temporary(r);
  if (temp !== null) {
    if (cfg.temperrorAction !== 'defer') return { kind: 'accept', reason: temp, marked: true };
    return exempt ? { kind: 'accept', reason: 'exempt', marked: true } : { kind: 'defer', reason: temp };
  }
  const applying = rules(r);
  const refusing = applying.find((rule) => actionOf(rule, cfg) === 'reject');
  if (refusing !== undefined) {
    if (exempt) return { kind: 'accept', reason: 'exempt', marked: true };
    const policy =
      refusing === 'dmarc-reject' ? 'reject' : refusing === 'dmarc-quarantine' ? 'quarantine' : undefined;
    return policy !== undefined
      ? { kind: 'refuse', reason: refusing, policy }
      : { kind: 'refuse', reason: refusing };
  }
  const junking = applying.find((rule) => actionOf(rule, cfg) === 'junk');
  if (junking !== undefined && junking !== 'spf-fail') {
    if (exempt) return { kind: 'accept', reason: 'exempt', marked: true };
    return { kind: 'junk', reason: junking };
  }
  const first = applying[0];
  if (first !== undefined) return { kind: 'accept', reason: first, marked: true };
  return { kind: 'accept', reason: r.dmarc.result === 'pass' ? 'pass' : 'no-policy', marked: false };
}
