/**
 * Queue administration on an open spool (`sterna queue …`): list, show, hold, release, delete
 * (one message, or the whole deferred queue) and bounce. The queue manager calls these while
 * it runs (after making sure it is not delivering the message at the same moment); the CLI
 * calls them itself on the spool of a stopped server. Bounces follow reports.ts (RFC 3461,
 * 3464, 6522): spooled before the message is removed, so a crash can repeat one but never lose
 * one.
 * Trust level: internal; the operator's queue ids are looked up, never used as paths.
 */
import type { Envelope, RecipientState } from '../message/envelope.js';
import { localOutcome, renderOutcome, type Outcome } from '../message/outcome.js';
import type { Logger } from '../observability/log.js';
import { spoolBounce } from './reports.js';
import type { HeldSet } from './held.js';
import type { Spool } from './spool.js';
import type { DkimSigning } from '../mailauth/dkim-sign.js';

/** One recipient of a queued message, as listed. */
export interface QueueRecipient {
  address: string;
  status: RecipientState['status'];
  /** The last error of a deferred or failed recipient, rendered from `outcome` (one line). */
  lastError?: string;
  /** The outcome itself, as data: code, enhanced code, text, origin, stage, reason id. */
  outcome?: Outcome;
  /** When a deferred recipient is due again (ms since the epoch). */
  nextAttemptAt?: number;
  attempts?: number;
  /** A deferred recipient whose sender has had the delay warning. */
  delayWarned?: true;
  /** Where a delivered recipient went: "mx1.example.net[192.0.2.1]: 250 …", "local", "forwarded as ID". */
  detail?: string;
}

/** One queued message, as `queue list` shows it. */
export interface QueueEntry {
  qid: string;
  receivedAt: number;
  size: number;
  /** Reverse-path; "" is the null sender. */
  sender: string;
  /** The authenticated user who submitted it (SMTP AUTH, the HTTP API), if any. */
  authUser?: string;
  held: boolean;
  recipients: QueueRecipient[];
}

/** `queue show`: the entry, the whole envelope, and the message's header section. */
export interface QueueMessageDetail extends QueueEntry {
  envelope: Envelope;
  headers: string;
}

/** At most this much of a body is read to find the end of its header section. */
const MAX_HEADER_BYTES = 256 * 1024;

export interface AdminContext {
  spool: Spool;
  held: HeldSet;
  log: Logger;
  hostname: string;
  now: () => number;
  /** Signs the bounce of `sterna queue bounce` ([dkim] sign_own_mail). */
  dkim?: DkimSigning;
}

/** The recipients (their addresses, in envelope order) with their states, as listed. */
export function recipientsOf(
  addresses: readonly string[],
  states: readonly RecipientState[],
): QueueRecipient[] {
  return addresses.map((address, i): QueueRecipient => {
    const r = { address };
    const s = states[i] ?? { status: 'pending' };
    if (s.status === 'deferred')
      return {
        address: r.address,
        status: s.status,
        lastError: renderOutcome(s.outcome),
        outcome: s.outcome,
        nextAttemptAt: s.nextAttemptAt,
        attempts: s.attempts,
        ...(s.warned === true ? { delayWarned: true as const } : {}),
      };
    if (s.status === 'failed') {
      return {
        address: r.address,
        status: s.status,
        lastError: renderOutcome(s.outcome),
        outcome: s.outcome,
      };
    }
    if (s.status === 'delivered' && s.detail !== undefined)
      return { address: r.address, status: s.status, detail: s.detail };
    return { address: r.address, status: s.status };
  });
}

function addressesOf(envelope: Envelope): string[] {
  return envelope.recipients.map((r) => r.address);
}

/** Every live message, oldest first. */
export async function listQueue(ctx: AdminContext): Promise<QueueEntry[]> {
  const out: QueueEntry[] = [];
  for (const m of ctx.spool.list()) {
    let envelope: Envelope;
    try {
      envelope = (await ctx.spool.read(m.qid)).envelope;
    } catch {
      continue; // finished meanwhile
    }
    out.push({
      qid: m.qid,
      receivedAt: m.receivedAt,
      size: m.size,
      sender: envelope.sender,
      ...(envelope.authUser !== undefined ? { authUser: envelope.authUser } : {}),
      held: ctx.held.has(m.qid),
      recipients: recipientsOf(addressesOf(envelope), m.states),
    });
  }
  return out;
}

/**
 * The queued messages of one sender (MAIL FROM, case-insensitive) or one authenticated user:
 * what `sterna queue hold --sender ADDR | --user U` holds in one step (a stolen account's mail).
 */
export function matchingMessages(
  entries: readonly QueueEntry[],
  who: { sender?: string; user?: string },
): QueueEntry[] {
  const sender = who.sender?.toLowerCase();
  const user = who.user?.toLowerCase();
  return entries.filter(
    (e) =>
      (sender !== undefined && e.sender.toLowerCase() === sender) ||
      (user !== undefined && e.authUser?.toLowerCase() === user),
  );
}

/** One message: envelope, recipient states and header section. Throws NOT_FOUND. */
export async function showMessage(ctx: AdminContext, qid: string): Promise<QueueMessageDetail> {
  const msg = await ctx.spool.read(qid);
  return {
    qid,
    receivedAt: msg.envelope.receivedAt,
    size: msg.size,
    sender: msg.envelope.sender,
    held: ctx.held.has(qid),
    recipients: recipientsOf(addressesOf(msg.envelope), msg.states),
    envelope: msg.envelope,
    headers: await readHeaders(ctx.spool, qid),
  };
}

/** The body up to and including the blank line after its header fields (bounded). */
async function readHeaders(spool: Spool, qid: string): Promise<string> {
  const parts: Buffer[] = [];
  let length = 0;
  for await (const chunk of spool.openBody(qid)) {
    parts.push(chunk);
    length += chunk.length;
    const text = Buffer.concat(parts).toString('latin1');
    const end = /\r?\n\r?\n/.exec(text);
    if (end !== null)
      return Buffer.concat(parts)
        .subarray(0, end.index + end[0].length)
        .toString('utf8');
    if (length >= MAX_HEADER_BYTES) break;
  }
  return Buffer.concat(parts).subarray(0, MAX_HEADER_BYTES).toString('utf8');
}

/** Removes a message from the spool without delivering or bouncing it. */
export async function deleteMessage(ctx: AdminContext, qid: string): Promise<void> {
  await ctx.spool.done(qid);
  await ctx.held.remove(qid);
  ctx.log.warn({ qid }, 'queue: message deleted by the administrator');
}

/**
 * Whether a message is in "the deferred queue" in Postfix's sense (`postsuper -d ALL
 * deferred`): not held, no recipient still pending, and at least one recipient deferred, i.e.
 * it waits for a retry after a failed attempt.
 */
export function isDeferredQueued(states: readonly RecipientState[], held: boolean): boolean {
  return !held && !states.some((s) => s.status === 'pending') && states.some((s) => s.status === 'deferred');
}

/**
 * `delete --failed` on the spool of a stopped server: removes every message of the deferred
 * queue (isDeferredQueued), without bounces. Returns their queue ids, oldest first. A running
 * server does this itself (QueueManager.deleteDeferred), waiting for delivery passes.
 */
export async function deleteDeferredMessages(ctx: AdminContext): Promise<string[]> {
  const out: string[] = [];
  for (const m of ctx.spool.list()) {
    if (!isDeferredQueued(m.states, ctx.held.has(m.qid))) continue;
    await deleteMessage(ctx, m.qid);
    out.push(m.qid);
  }
  return out;
}

/**
 * Fails every recipient not yet delivered or failed, spools one failure DSN to the sender for
 * them (NOTIFY permitting, never to <>), then removes the message. Returns whether a bounce
 * was spooled. Throws if the bounce could not be spooled (the message then stays).
 */
export async function bounceMessage(ctx: AdminContext, qid: string): Promise<{ bounced: boolean }> {
  const msg = await ctx.spool.read(qid);
  const at = ctx.now();
  const failed: number[] = [];
  const states = new Map<number, RecipientState>();
  msg.states.forEach((s, index) => {
    if (s.status === 'delivered' || s.status === 'failed') return;
    failed.push(index);
    states.set(index, { status: 'failed', at, outcome: localOutcome('admin-bounce', 'queue') });
  });
  const result =
    failed.length === 0
      ? 'none'
      : await spoolBounce(
          {
            spool: ctx.spool,
            log: ctx.log,
            hostname: ctx.hostname,
            now: ctx.now,
            ...(ctx.dkim !== undefined ? { dkim: ctx.dkim } : {}),
          },
          qid,
          msg.envelope,
          failed,
          states,
          new Map(),
        );
  if (result === 'error') throw new Error(`the bounce for ${qid} could not be spooled; message kept`);
  await ctx.spool.done(qid);
  await ctx.held.remove(qid);
  ctx.log.warn({ qid, recipients: failed.length }, 'queue: message bounced by the administrator');
  return { bounced: result === 'sent' };
}
