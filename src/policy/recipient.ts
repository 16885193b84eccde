/**
 * RCPT decision (RFC 5321 3.6, 4.5.1; no open relay): a local domain accepts only its
 * mailboxes, aliases, catch-alls and postmaster; any other domain only from an authenticated
 * session or a trusted network. Refusing at RCPT time means no backscatter later. An SRS
 * address of ours (a bounce of forwarded mail) is accepted from anyone when valid, and refused
 * 550 5.1.1 when forged or expired (docs/mail-auth.md, "Forwarding").
 */
import { formatMailbox, unquoteLocal, type Mailbox } from '../smtp/address.js';
import { reply } from '../smtp/replies.js';
import type { ClientView, RecipientVerdict } from '../smtp/session.js';
import { isKnownRecipient, type AliasTable } from './aliases.js';
import type { NetworkList } from './networks.js';
import type { Srs } from '../mailauth/srs.js';

export interface RecipientPolicy {
  localDomains: ReadonlySet<string>;
  /** Domains whose mail is accepted for any local part and discarded (transport "discard"). */
  discardDomains: ReadonlySet<string>;
  /** Domains routed to LMTP (transport "lmtp:..."): any local part here; the LMTP server decides (asked at RCPT by delivery/lmtp-probe.ts when [lmtp] verify_recipients). */
  lmtpDomains: ReadonlySet<string>;
  isMailbox(address: string): boolean;
  aliases(): AliasTable;
  trusted: NetworkList;
  /** Bounce addresses of forwarded mail ([forwarding] srs): verified here, routed by the router. */
  srs?: Srs | null;
}

/** The lookup key of a mailbox: the unquoted local part and the lower-cased domain. */
export function addressKey(m: Mailbox): string {
  return `${unquoteLocal(m.local)}@${m.domain}`;
}

export function isLocalDomain(policy: RecipientPolicy, domain: string): boolean {
  return policy.localDomains.has(domain.toLowerCase());
}

export function checkRecipient(
  policy: RecipientPolicy,
  rcpt: Mailbox,
  ctx: { authUser: string | undefined; client: ClientView },
): RecipientVerdict {
  // RFC 5321 4.5.1: <postmaster> (no domain) and postmaster@ every local domain are always accepted.
  if (rcpt.domain === '') return { kind: 'accept' };
  const key = addressKey(rcpt);
  // An SRS address of ours (RFC-less scheme, src/mailauth/srs.ts): a bounce to a sender whose
  // mail we forwarded. Accepted, whoever sends it, only when we made it and it has not expired.
  if (policy.srs?.isSrsAddress(key) === true) return checkSrsRecipient(policy.srs, key, rcpt);
  if (policy.discardDomains.has(rcpt.domain.toLowerCase())) return { kind: 'accept' };
  if (policy.lmtpDomains.has(rcpt.domain.toLowerCase())) return { kind: 'accept' };
  if (isLocalDomain(policy, rcpt.domain)) {
    if (unquoteLocal(rcpt.local).toLowerCase() === 'postmaster') return { kind: 'accept' };
    if (isKnownRecipient(policy.aliases(), key, (a) => policy.isMailbox(a))) return { kind: 'accept' };
    return { kind: 'reject', reply: reply('NO_SUCH_USER', { address: formatMailbox(rcpt) }) };
  }
  if (ctx.authUser !== undefined || policy.trusted.has(ctx.client.ip)) return { kind: 'accept' };
  return { kind: 'reject', reply: reply('RELAY_DENIED', { address: formatMailbox(rcpt) }) };
}

function checkSrsRecipient(srs: Srs, key: string, rcpt: Mailbox): RecipientVerdict {
  const back = srs.reverse(key);
  if (back.ok) return { kind: 'accept' };
  const address = formatMailbox(rcpt);
  return {
    kind: 'reject',
    reply:
      back.reason === 'expired'
        ? reply('SRS_EXPIRED', { address, days: String(srs.maxAgeDays) })
        : reply('SRS_INVALID', { address }),
  };
}
