/**
 * Local delivery for the queue manager: a recipient in one of our domains goes to its Maildir
 * mailboxes (delivery/local/maildir.ts; at most `concurrency` at once across every active
 * message), an alias's targets in other domains are forwarded as a new message (forward.ts), the
 * discard transport drops it, and a failed route fails it. A Maildir that cannot be written
 * defers the recipient for `retryMs`; past the message's lifetime it fails (4.4.7). Exactly once:
 * a retry finds a copy left by an attempt whose result was lost (the Maildir name holds the
 * queue id and recipient index). Trust: internal; addresses were validated at reception.
 */
import {
  deliverToMaildir,
  deliveryHeaders,
  junkFolderOf,
  maildirPathFor,
  maildirUniqueName,
  type MaildirOwnership,
} from '../delivery/local/maildir.js';
import { MaildirWriterThreads } from '../delivery/local/maildir-writers.js';
import type { Router } from '../delivery/router.js';
import type { Envelope, RecipientState } from '../message/envelope.js';
import { localOutcome, renderOutcome, type Outcome } from '../message/outcome.js';
import type { Logger } from '../observability/log.js';
import { forwardAlias, type ForwardingServices } from './forward.js';
import { expiredOutcome, warnedOf } from './recipient-states.js';
import type { RetryPolicy } from './scheduler.js';
import type { Spool } from './spool.js';

export interface LocalDeliveryOptions {
  spool: Spool;
  router: Router;
  log: Logger;
  hostname: string;
  maildirRoot: string;
  /** Owner, group and modes of what Maildir delivery creates; default Sterna's user, 0700/0600. */
  ownership?: MaildirOwnership;
  /** Maildir deliveries running at once, across all active messages. */
  concurrency: number;
  /** Maildir writer threads at most ([local_delivery] threads; maildir-writers.ts). Default 1. */
  threads?: number;
  /** Delay before a deferred local recipient is tried again. */
  retryMs: number;
  /** The message lifetime (expiry); without outbound, local mail never expires. */
  retry?: RetryPolicy;
  /** SRS and ARC sealing of forwarded copies (forward.ts); without it, copies go unchanged. */
  forwarding?: ForwardingServices;
  now: () => number;
}

/** A local recipient's new state; forwarded when it was (also) forwarded as a new message. */
export interface LocalUpdate {
  index: number;
  state: RecipientState;
  /** A forwarded alias, like a remote delivery, must not be redone after a crash. */
  forwarded?: true;
}

export class LocalDelivery {
  readonly #o: LocalDeliveryOptions;
  readonly #now: () => number;
  #running = 0;
  readonly #waiting: (() => void)[] = [];
  readonly #writer: MaildirWriterThreads;

  constructor(o: LocalDeliveryOptions) {
    this.#o = o;
    this.#now = o.now;
    this.#writer = new MaildirWriterThreads({ threads: o.threads ?? 1 });
  }

  /** Stops the Maildir writer threads (at shutdown, once no delivery runs). */
  close(): Promise<void> {
    return this.#writer.close();
  }

  /** A local recipient's next state after a temporary failure: tried again after retryMs. */
  #localDeferral(previous: RecipientState, outcome: Outcome): RecipientState {
    return {
      status: 'deferred',
      attempts: previous.status === 'deferred' ? previous.attempts + 1 : 1,
      nextAttemptAt: this.#now() + this.#o.retryMs,
      outcome,
      ...warnedOf(previous),
    };
  }

  /** Runs fn when fewer than localConcurrency Maildir deliveries are running. */
  async #withSlot<T>(fn: () => Promise<T>): Promise<T> {
    while (this.#running >= this.#o.concurrency) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
    this.#running++;
    try {
      return await fn();
    } finally {
      this.#running--;
      this.#waiting.shift()?.();
    }
  }

  /**
   * Delivers the message to one local recipient: its mailboxes (Maildir), then its forwarding
   * targets in other domains; discard and failed routes are answered at once. Returns the new
   * state, or null for a remote recipient (not ours).
   */
  async deliver(
    qid: string,
    index: number,
    address: string,
    envelope: Envelope,
    state: RecipientState,
    firstAttempt: boolean,
  ): Promise<LocalUpdate | null> {
    const { sender } = envelope;
    const { log, spool, router } = this.#o;
    const route = router.route(address);
    if (route.kind === 'remote') return null; // the outbound queue's
    if (route.kind === 'discard') {
      log.info({ qid, rcpt: address }, 'discarded (transport "discard")');
      return { index, state: { status: 'delivered', at: this.#now(), detail: 'discarded' } };
    }
    if (route.kind === 'failed') {
      log.error({ qid, rcpt: address, reason: route.reason }, 'recipient failed');
      const outcome = localOutcome('local-failed', 'route', { reason: route.reason });
      return { index, state: { status: 'failed', at: this.#now(), outcome } };
    }
    const reasons: string[] = [];
    for (const mailbox of route.mailboxes) {
      const at = mailbox.lastIndexOf('@');
      const inbox = maildirPathFor(this.#o.maildirRoot, {
        local: mailbox.slice(0, at).toLowerCase(),
        domain: mailbox.slice(at + 1),
      });
      // A content filter's Junk verdict (src/filters/): the mailbox's Junk folder, not its inbox.
      const maildir = envelope.junk === true ? junkFolderOf(inbox) : inbox;
      const result = await this.#withSlot(() =>
        deliverToMaildir(
          {
            maildir,
            uniqueName: maildirUniqueName(qid, index, this.#o.hostname),
            prepend: deliveryHeaders({ sender, recipient: mailbox }),
            body: spool.openBody(qid),
          },
          // Several mailboxes may share a Maildir name only across messages, never within one:
          // skip the existence check on a first attempt (the fast path), keep it on every retry.
          {
            checkExisting: !firstAttempt,
            writer: this.#writer,
            ...(this.#o.ownership !== undefined ? { ownership: this.#o.ownership } : {}),
          },
        ),
      );
      switch (result.kind) {
        case 'delivered':
          log.info(
            { qid, rcpt: address, mailbox, path: result.path, duplicate: result.duplicate },
            'delivered',
          );
          break;
        case 'deferred':
          log.warn({ qid, rcpt: address, mailbox, reason: result.reason }, 'delivery deferred');
          reasons.push(result.reason);
          break;
        case 'failed':
          log.error({ qid, rcpt: address, mailbox, reason: result.reason }, 'delivery failed');
          return {
            index,
            state: {
              status: 'failed',
              at: this.#now(),
              outcome: localOutcome('local-failed', 'local-delivery', { reason: result.reason }),
            },
          };
        default: {
          const never: never = result;
          throw new Error(`unhandled result ${JSON.stringify(never)}`);
        }
      }
    }
    if (reasons.length > 0) {
      const deferral = localOutcome('local-deferred', 'local-delivery', { reason: reasons.join('; ') });
      const expired = expiredOutcome(envelope, deferral, this.#o.retry, this.#now());
      if (expired !== null) {
        log.error({ qid, rcpt: address, reason: renderOutcome(expired) }, 'delivery failed: message expired');
        return { index, state: { status: 'failed', at: this.#now(), outcome: expired } };
      }
      return { index, state: this.#localDeferral(state, deferral) };
    }
    if (route.remote.length > 0) {
      const forwarded = await forwardAlias(
        {
          spool,
          log,
          hostname: this.#o.hostname,
          now: this.#now,
          ...(this.#o.forwarding !== undefined ? { forwarding: this.#o.forwarding } : {}),
        },
        qid,
        envelope,
        index,
        route.remote,
      );
      if (forwarded === null) {
        const outcome = localOutcome('forward-not-queued', 'local-delivery', {
          targets: route.remote.join(', '),
        });
        return { index, state: this.#localDeferral(state, outcome) };
      }
      const detail = `${route.mailboxes.length > 0 ? 'local; ' : ''}forwarded as ${forwarded}`;
      return { index, state: { status: 'delivered', at: this.#now(), detail }, forwarded: true };
    }
    return { index, state: { status: 'delivered', at: this.#now(), detail: 'local' } };
  }
}
