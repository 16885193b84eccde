/**
 * Inbound mail authentication for one message, beside its session: SPF starts as soon as the
 * message does (it needs only the envelope); the message's octets stream into mailauth's DKIM
 * verifier as they arrive (a PassThrough with backpressure: nothing is gathered here, and the
 * body is hashed chunk by chunk between other sessions' events, DESIGN rule 7); at the end of
 * data ARC and DMARC follow, then the policy decides (policy.ts) and the session gets a verdict:
 * accept with our Authentication-Results field (RFC 8601), refuse (550) or defer (451).
 *
 * Bounds: every DNS lookup of the message shares one deadline (timeout_ms, resolver.ts); a
 * header section over max_header_bytes is not handed to the verifier at all (mailauth gathers
 * the header section in memory), and gets dkim=permerror. Nothing here throws into the session:
 * any failure of a check is that check's temperror or permerror.
 * Trust level: the message, its sender and every DNS answer are untrusted.
 */
import { PassThrough } from 'node:stream';
import { arc, dkimVerify, type ARCResult, type DKIMVerifyResult } from 'mailauth';
import type { DnsResolver } from '../delivery/dns.js';
import type { Logger } from '../observability/log.js';
import { NetworkList } from '../policy/networks.js';
import { reply, type Reply } from '../smtp/replies.js';
import type { CheckContext, CheckVerdict, MessageCheck } from '../smtp/session.js';
import { dkimOutcome, unparseableSignature } from './dkim.js';
import { checkDmarc } from './dmarc.js';
import { evaluationOf, type DmarcEvaluation } from './dmarc-report-record.js';
import { HeaderSection, writeWithBackpressure } from './header-section.js';
import { decide, type Decision, type EnforcementConfig } from './policy.js';
import { mailauthResolver } from './resolver.js';
import {
  formatAuthResults,
  type ArcOutcome,
  type AuthResults,
  type DkimOutcome,
  type DmarcOutcome,
  type SpfOutcome,
} from './results.js';
import { checkSpf } from './spf.js';

export interface MailAuthOptions {
  authservId: string;
  listeners: readonly string[];
  allowPartialBody: boolean;
  minRsaKeyBits: number;
  timeoutMs: number;
  maxHeaderBytes: number;
  enforcement: EnforcementConfig;
  exempt: readonly string[];
  dns: DnsResolver;
  now?: () => number;
  /** The pct sample draw, in [0, 1). */
  random?: () => number;
  /** Told every message's results (metrics: sterna_mailauth_results_total). */
  onResults?: (r: AuthResults) => void;
  /** Told every DMARC evaluation against a published record (aggregate reports, dmarc-report.ts). */
  onDmarcEvaluation?: (e: DmarcEvaluation) => void;
}

/** The allow list, split by kind (see docs/mail-auth.md for what each kind matches). */
class AllowList {
  readonly #networks: NetworkList;
  readonly #addresses: Set<string>;
  readonly #domains: Set<string>;

  constructor(entries: readonly string[]) {
    const isNetwork = (e: string): boolean =>
      /^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(e) && /[:]|^\d+\.\d+\.\d+\.\d+/.test(e);
    this.#networks = new NetworkList(entries.filter(isNetwork));
    this.#addresses = new Set(entries.filter((e) => e.includes('@')).map((e) => e.toLowerCase()));
    this.#domains = new Set(
      entries.filter((e) => !e.includes('@') && !isNetwork(e)).map((e) => e.toLowerCase()),
    );
  }

  /**
   * A network matches the client's address. An address or a domain matches the MAIL FROM, but
   * only when SPF passed for it: otherwise anyone could claim a listed sender to be let through.
   */
  has(ip: string, sender: string, spf: SpfOutcome): boolean {
    if (this.#networks.has(ip)) return true;
    if (spf.result !== 'pass' || spf.identity !== 'mailfrom' || sender === '') return false;
    const lower = sender.toLowerCase();
    return this.#addresses.has(lower) || this.#domains.has(lower.slice(lower.lastIndexOf('@') + 1));
  }
}

export class MailAuth {
  readonly #o: MailAuthOptions;
  readonly #allow: AllowList;

  constructor(o: MailAuthOptions) {
    this.#o = o;
    this.#allow = new AllowList(o.exempt);
  }

  /** A check for a message received on ctx.listener, or null when that listener is not checked. */
  begin(ctx: CheckContext, log: Logger): MessageCheck | null {
    if (!this.#o.listeners.includes(ctx.listener)) return null;
    return new MessageAuthCheck(this.#o, this.#allow, ctx, log);
  }
}

class MessageAuthCheck implements MessageCheck {
  readonly #o: MailAuthOptions;
  readonly #allow: AllowList;
  readonly #ctx: CheckContext;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #resolver;
  readonly #spf: Promise<SpfOutcome>;
  readonly #stream = new PassThrough({ highWaterMark: 64 * 1024 });
  readonly #dkim: Promise<DKIMVerifyResult | Error>;
  readonly #header = new HeaderSection();
  #inHeader = true;
  #state: 'open' | 'too-big' | 'finished' | 'aborted' = 'open';

  constructor(o: MailAuthOptions, allow: AllowList, ctx: CheckContext, log: Logger) {
    this.#o = o;
    this.#allow = allow;
    this.#ctx = ctx;
    this.#log = log;
    this.#now = o.now ?? Date.now;
    this.#resolver = mailauthResolver(o.dns, this.#now() + o.timeoutMs, this.#now);
    this.#spf = checkSpf({
      sender: ctx.sender,
      helo: ctx.helo,
      ip: ctx.client.ip,
      mta: o.authservId,
      resolver: this.#resolver,
    });
    this.#dkim = dkimVerify(this.#stream, {
      resolver: this.#resolver,
      minBitLength: o.minRsaKeyBits,
      ...(ctx.sender !== '' ? { sender: ctx.sender } : {}),
    }).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.#state !== 'open') return;
    if (this.#inHeader) this.#scanHeader(chunk);
    if (this.#state !== 'open') return; // the header section outgrew the limit
    await writeWithBackpressure(this.#stream, chunk, this.#dkim);
  }

  /** Follows the header section to its empty line; stops the verifier when it is too large. */
  #scanHeader(chunk: Buffer): void {
    if (this.#header.scan(chunk)) this.#inHeader = false;
    if (this.#header.bytes > this.#o.maxHeaderBytes) {
      this.#state = 'too-big';
      this.#stream.destroy(new Error('header section too large'));
    }
  }

  abort(): void {
    if (this.#state === 'finished' || this.#state === 'aborted') return;
    this.#state = 'aborted';
    this.#stream.destroy(new Error('message dropped'));
  }

  async finish(): Promise<CheckVerdict> {
    try {
      return await this.#finish();
    } catch (err) {
      // A defect here must not cost the message: accept it without our field (forged ones are
      // already gone), and say so.
      this.#log.error({ qid: this.#ctx.qid, err }, 'mailauth check failed; message accepted without results');
      return { kind: 'accept', prepend: '' };
    }
  }

  async #finish(): Promise<CheckVerdict> {
    const tooBig = this.#state === 'too-big';
    this.#state = 'finished';
    if (!tooBig) this.#stream.end();
    const spf = await this.#spf;
    let dkim: DkimOutcome[];
    let arcOutcome: ArcOutcome;
    let dmarc: DmarcOutcome;
    if (tooBig) {
      const reason = `header section over ${this.#o.maxHeaderBytes} octets, not verified`;
      dkim = [{ result: 'permerror', reason }];
      arcOutcome = { result: 'none', reason };
      dmarc = { result: 'permerror', disposition: 'none', reason };
    } else {
      const verified = await this.#dkim;
      if (verified instanceof Error) {
        const reason = `message could not be verified: ${verified.message}`;
        dkim = [{ result: 'permerror', reason }];
        arcOutcome = { result: 'none', reason };
        dmarc = { result: 'permerror', disposition: 'none', reason };
      } else {
        dkim = this.#dkimOutcomes(verified);
        const arcResult = await this.#arc(verified);
        arcOutcome = arcOutcomeOf(arcResult);
        dmarc = await checkDmarc({
          fromAddresses: verified.headerFrom,
          spf,
          dkim,
          ...(arcResult !== undefined ? { arc: arcResult } : {}),
          resolver: this.#resolver,
          random: this.#o.random ?? Math.random,
        });
      }
    }
    const results: AuthResults = { spf, dkim, dmarc, arc: arcOutcome };
    const exempt = this.#allow.has(this.#ctx.client.ip, this.#ctx.sender, spf);
    const decision = decide(results, this.#o.enforcement, exempt);
    this.#logDecision(results, decision);
    this.#record(results, decision);
    switch (decision.kind) {
      case 'accept':
        return { kind: 'accept', prepend: formatAuthResults(this.#o.authservId, results) };
      case 'junk':
        // RFC 7489 6.3 quarantine: accepted, local copies to the Junk folder (Maildir++ .Junk).
        return { kind: 'accept', prepend: formatAuthResults(this.#o.authservId, results), junk: true };
      case 'refuse':
      case 'defer':
        return { kind: 'refuse', reply: this.#reply(results, decision) };
      default: {
        const never: never = decision;
        throw new Error(`unhandled decision ${JSON.stringify(never)}`);
      }
    }
  }

  /** Hands the DMARC evaluation to the aggregate reports, when they are on. */
  #record(r: AuthResults, d: Decision): void {
    const sink = this.#o.onDmarcEvaluation;
    if (sink === undefined) return;
    const e = evaluationOf(r, d, { ip: this.#ctx.client.ip, sender: this.#ctx.sender, now: this.#now() });
    if (e !== null) sink(e);
  }

  #dkimOutcomes(v: DKIMVerifyResult): DkimOutcome[] {
    const policy = { allowPartialBody: this.#o.allowPartialBody };
    const signed = v.results.filter((r) => r.status.result !== 'none');
    const out = signed.map((r) => dkimOutcome(r, policy));
    const fields = v.headers?.parsed.filter((h) => h.key === 'dkim-signature').length ?? 0;
    for (let i = out.length; i < fields; i++) out.push(unparseableSignature());
    return out.length > 0 ? out : [{ result: 'none', reason: 'message not signed' }];
  }

  async #arc(v: DKIMVerifyResult): Promise<ARCResult | undefined> {
    const data = v.arc;
    if (data === undefined) return undefined;
    if (data.chain === false) {
      // ARC fields that do not make a chain (RFC 8617 5.2: a gap, a duplicate, a cv other than
      // pass after i=1, as a seal of a failed chain says): the chain fails. No fields: none.
      if (data.error === undefined) return undefined;
      return { i: false, status: { result: 'fail', comment: arcErrorText(data.error) } };
    }
    try {
      return await arc(
        {
          chain: data.chain,
          ...(data.lastEntry !== undefined ? { lastEntry: data.lastEntry } : {}),
          ...(data.error !== undefined ? { error: data.error } : {}),
        },
        { resolver: this.#resolver, minBitLength: this.#o.minRsaKeyBits },
      );
    } catch (err) {
      return {
        i: false,
        status: { result: 'fail', comment: err instanceof Error ? err.message : String(err) },
      };
    }
  }

  #reply(r: AuthResults, d: Extract<Decision, { kind: 'refuse' | 'defer' }>): Reply {
    switch (d.reason) {
      case 'dmarc-reject':
      case 'dmarc-quarantine':
        return reply('DMARC_REJECT', {
          domain: r.dmarc.fromDomain ?? '',
          policy: d.reason === 'dmarc-reject' ? 'reject' : 'quarantine',
          detail: dmarcDetail(r),
        });
      case 'spf-fail':
        return reply('SPF_REJECT', {
          domain: r.spf.domain,
          ip: this.#ctx.client.ip,
          explanation: r.spf.explanation !== undefined ? `: ${r.spf.explanation}` : '',
        });
      case 'spf-temperror':
        return reply('SPF_TEMPERROR', { domain: r.spf.domain });
      case 'dmarc-temperror':
        return reply('AUTH_CHECK_TEMPERROR', { domain: r.dmarc.fromDomain ?? r.spf.domain });
      default: {
        const never: never = d;
        throw new Error(`unhandled decision ${JSON.stringify(never)}`);
      }
    }
  }

  #logDecision(r: AuthResults, d: Decision): void {
    this.#o.onResults?.(r);
    this.#log.info(
      {
        qid: this.#ctx.qid,
        spf: { result: r.spf.result, [r.spf.identity]: r.spf.value, domain: r.spf.domain },
        dkim: r.dkim.map((x) => ({ result: x.result, d: x.domain, s: x.selector, reason: x.reason })),
        dmarc: {
          result: r.dmarc.result,
          from: r.dmarc.fromDomain,
          policy: r.dmarc.policy,
          disposition: r.dmarc.disposition,
        },
        arc: r.arc.result,
        action: d.kind,
        rule: d.reason,
      },
      'mailauth',
    );
  }
}

/** The short why of a DMARC refusal: which identifiers failed to pass aligned. */
function dmarcDetail(r: AuthResults): string {
  const spf = `SPF ${r.spf.result} for ${r.spf.domain || 'no domain'}`;
  const passing = r.dkim.filter((d) => d.result === 'pass').map((d) => d.domain ?? '');
  const dkim = passing.length > 0 ? `DKIM pass for ${passing.join(', ')} only` : 'no passing DKIM signature';
  return `${spf}, ${dkim}; none aligned with the From domain`;
}

function arcOutcomeOf(a: ARCResult | undefined): ArcOutcome {
  if (a === undefined) return { result: 'none' };
  const result = a.status.result === 'pass' ? 'pass' : a.status.result === 'fail' ? 'fail' : 'none';
  const out: ArcOutcome = { result };
  if (typeof a.i === 'number' && a.i > 0) out.instance = a.i;
  if (result === 'fail' && a.status.comment !== undefined) out.reason = a.status.comment;
  return out;
}

/** The reason mailauth gives for ARC fields that make no chain, as one short line. */
function arcErrorText(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text
    .replace(/["'()]/g, ' ')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 128);
}
