/**
 * Forwarding for local aliases whose targets are in other domains (and for bounces to SRS
 * addresses, which route to the original sender): a new message with the same parameters and
 * content (as Postfix's local delivery forwards), spooled before the alias's recipient is
 * recorded as delivered, so a crash may forward twice but never lose the mail. Each target keeps
 * the original recipient's NOTIFY and, as ORCPT, the address the sender used. Loops through
 * other servers end at the Received-header limit (RFC 5321 6.3).
 *
 * Two changes make the copy pass the next hop's checks (docs/mail-auth.md, "Forwarding"):
 * - SRS (mailauth/srs.ts): an envelope sender in an outside domain becomes an SRS0 (or SRS1)
 *   address in the SRS domain, so SPF at the next hop is checked against us, who really send.
 *   The null sender <> and senders in our own domains are kept.
 * - ARC (RFC 8617, mailauth/arc-seal.ts): an ARC set at the top of the copy, which carries our
 *   Authentication-Results of the arrival to the next hop, signed, with the chain's status.
 * Neither ever costs the copy: a failure of either forwards the copy without it, logged.
 *
 * Trust: the targets come from the administrator's alias table; the content is the queued
 * message (untrusted octets, only copied and hashed here).
 */
import type { Envelope } from '../message/envelope.js';
import { readHeaderSection, type ArcSealer, type ArcSealStream } from '../mailauth/arc-seal.js';
import { HeaderSection } from '../mailauth/header-section.js';
import type { Srs } from '../mailauth/srs.js';
import type { ReportContext } from './reports.js';

/** SRS and ARC for forwarded copies ([forwarding]); absent or null parts are off. */
export interface ForwardingServices {
  srs: Srs | null;
  arc: ArcSealer | null;
  /** Senders in these domains are ours, and are not rewritten. */
  isLocalDomain(domain: string): boolean;
  /** Largest header section read to plan the ARC set. */
  maxHeaderBytes: number;
}

/** The sender of a forwarded copy: SRS-rewritten when it is in an outside domain. */
export function forwardedSender(sender: string, f: ForwardingServices | undefined): string {
  const srs = f?.srs;
  if (srs === null || srs === undefined || sender === '') return sender;
  const at = sender.lastIndexOf('@');
  if (at <= 0) return sender;
  const local = sender.slice(0, at);
  const domain = sender.slice(at + 1).toLowerCase();
  if (domain === srs.domain || f?.isLocalDomain(domain) === true) return sender;
  // A quoted local part would need quoting again inside the SRS local part: kept as it is.
  if (local.startsWith('"')) return sender;
  return srs.forward(sender);
}

/** Spools the forwarded copy; returns its queue id, or null when it could not be spooled. */
export async function forwardAlias(
  ctx: ReportContext & { forwarding?: ForwardingServices },
  qid: string,
  envelope: Envelope,
  index: number,
  targets: readonly string[],
): Promise<string | null> {
  const { spool, log } = ctx;
  const rcpt = envelope.recipients[index];
  if (rcpt === undefined) return null;
  const orcpt = rcpt.params.orcpt ?? { type: 'rfc822', address: rcpt.address };
  const sender = forwardedSender(envelope.sender, ctx.forwarding);
  const sealer = await startSeal(ctx, qid, rcpt.address);
  const writer = spool.begin();
  let arcFields: Buffer | undefined;
  try {
    const header = new HeaderSection();
    for await (const chunk of spool.openBody(qid)) {
      await writer.write(chunk);
      if (sealer !== null) {
        header.scan(chunk);
        await sealer.write(chunk);
      }
    }
    if (sealer !== null) arcFields = await finishSeal(ctx, qid, sealer, header.ended);
    await writer.commit(
      {
        sender,
        mailParams: envelope.mailParams,
        recipients: targets.map((address) => ({
          address,
          params: { ...(rcpt.params.notify !== undefined ? { notify: rcpt.params.notify } : {}), orcpt },
        })),
        client: { ip: '127.0.0.1', port: 0, helo: ctx.hostname },
        listener: 'smtp',
        receivedAt: ctx.now(),
        // The copy carries our DKIM-Signature unchanged: the same rules hold for it.
        ...(envelope.dkimSigned === true ? { dkimSigned: true as const } : {}),
      },
      arcFields,
    );
  } catch (err) {
    sealer?.abort();
    writer.abort();
    log.error({ qid, rcpt: rcpt.address, err }, 'alias forwarding not queued; will retry');
    return null;
  }
  log.info(
    {
      qid,
      rcpt: rcpt.address,
      forwarded: writer.qid,
      to: targets,
      ...(sender !== envelope.sender ? { srs: sender } : {}),
      ...(arcFields !== undefined ? { arc: 'sealed' } : {}),
    },
    'alias forwarded to other domains',
  );
  return writer.qid;
}

/** The ARC sealer for this copy, or null when none is added (off, or the plan says skip). */
async function startSeal(
  ctx: ReportContext & { forwarding?: ForwardingServices },
  qid: string,
  alias: string,
): Promise<ArcSealStream | null> {
  const f = ctx.forwarding;
  if (f === undefined || f.arc === null) return null;
  const domain = alias.slice(alias.lastIndexOf('@') + 1).toLowerCase();
  const header = await readHeaderSection(ctx.spool.openBody(qid), f.maxHeaderBytes);
  const plan = f.arc.plan(header, domain);
  if (plan.kind === 'skip') {
    ctx.log.info({ qid, rcpt: alias, reason: plan.reason }, 'arc: forwarded copy not sealed');
    return null;
  }
  ctx.log.debug(
    { qid, rcpt: alias, i: plan.instance, cv: plan.cv, d: plan.key.domain, s: plan.key.selector },
    'arc: sealing the forwarded copy',
  );
  return f.arc.begin(plan);
}

/** The ARC fields, or undefined (logged) when sealing failed: the copy goes without them. */
async function finishSeal(
  ctx: ReportContext,
  qid: string,
  sealer: ArcSealStream,
  sawHeaderEnd: boolean,
): Promise<Buffer | undefined> {
  try {
    return await sealer.finish(sawHeaderEnd);
  } catch (err) {
    ctx.log.error({ qid, err }, 'arc: sealing failed; the copy is forwarded without an ARC set');
    return undefined;
  }
}
