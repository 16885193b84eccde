/**
 * Forwarding for local aliases whose targets are in other domains: a new message with the same
 * sender, parameters and content (as Postfix's local delivery forwards), spooled before the
 * alias's recipient is recorded as delivered, so a crash may forward twice but never lose the
 * mail. Each target keeps the original recipient's NOTIFY and, as ORCPT, the address the sender
 * used. Loops through other servers end at the Received-header limit (RFC 5321 6.3). Trust: the
 * targets come from the administrator's alias table; the content is the queued message.
 */
import type { Envelope } from '../message/envelope.js';
import type { ReportContext } from './reports.js';

/** Spools the forwarded copy; returns its queue id, or null when it could not be spooled. */
export async function forwardAlias(
  ctx: ReportContext,
  qid: string,
  envelope: Envelope,
  index: number,
  targets: readonly string[],
): Promise<string | null> {
  const { spool, log } = ctx;
  const rcpt = envelope.recipients[index];
  if (rcpt === undefined) return null;
  const orcpt = rcpt.params.orcpt ?? { type: 'rfc822', address: rcpt.address };
  const writer = spool.begin();
  try {
    for await (const chunk of spool.openBody(qid)) await writer.write(chunk);
    await writer.commit({
      sender: envelope.sender,
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
    });
  } catch (err) {
    writer.abort();
    log.error({ qid, rcpt: rcpt.address, err }, 'alias forwarding not queued; will retry');
    return null;
  }
  log.info(
    { qid, rcpt: rcpt.address, forwarded: writer.qid, to: targets },
    'alias forwarded to other domains',
  );
  return writer.qid;
}
