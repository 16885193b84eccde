/**
 * Small rules on recipient states shared by the queue manager and its delivery passes: when a
 * message next needs work, the delay-warning mark a deferral keeps, and when a recipient is given
 * up on (RFC 5321 4.5.4.1). Pure; the clock is passed in. Trust: internal.
 */
import type { Envelope, RecipientState } from '../message/envelope.js';
import { localOutcome, renderOutcome, type Outcome } from '../message/outcome.js';
import { isExpired, type RetryPolicy } from './scheduler.js';

/** When a message next needs work: now for pending recipients, the earliest retry for deferred ones. */
export function nextDue(states: readonly RecipientState[]): number | null {
  let next: number | null = null;
  for (const s of states) {
    if (s.status === 'pending') return 0;
    if (s.status === 'deferred') next = next === null ? s.nextAttemptAt : Math.min(next, s.nextAttemptAt);
  }
  return next;
}

/** The delay-warning mark of a previous state, to carry into the next deferred state. */
export function warnedOf(previous: RecipientState): { warned?: true } {
  return previous.status === 'deferred' && previous.warned === true ? { warned: true } : {};
}

/**
 * RFC 5321 4.5.4.1: the outcome of a recipient given up on (4.4.7, wrapping its last outcome),
 * or null while the message may still wait. Without a retry policy (no outbound) nothing expires.
 */
export function expiredOutcome(
  envelope: Envelope,
  last: Outcome,
  retry: RetryPolicy | undefined,
  now: number,
): Outcome | null {
  if (retry === undefined || !isExpired(envelope.receivedAt, now, retry)) return null;
  const days = ((now - envelope.receivedAt) / 86_400_000).toFixed(1);
  return localOutcome('expired', 'queue', { days, last: renderOutcome(last) }, last);
}
