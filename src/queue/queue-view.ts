/**
 * The queue as the admin API and the dashboard page through it: filters (sender, recipient,
 * recipient domain, state, age) and pages (a cursor or an offset, a limit, the total count),
 * computed on the server so that a queue of 100,000 messages answers one page at a time.
 *
 * The spool's index holds ids, times, sizes and recipient states in memory, but not the
 * envelopes. A filter on an address needs them, so the view keeps a summary of each envelope
 * it has read (sender and recipient addresses; an envelope never changes once committed),
 * read from disk once per message (or noted when a delivery pass reads it anyway), and dropped
 * when the message leaves the spool. Messages leave without telling the view (delivered,
 * bounced, deleted, by any path), so the view checks against the spool's index: at each page,
 * and whenever its summaries outnumber the live messages by more than the queue again (plus
 * PRUNE_SLACK). Each check at least halves the map, so a server whose admin API is never
 * asked keeps at most about twice its queue, not one summary per message it ever delivered.
 * Trust: internal; filter strings come from the authenticated operator and are only compared.
 */
import type { Envelope, RecipientState } from '../message/envelope.js';
import { isDeferredQueued, recipientsOf, type QueueEntry } from './admin.js';
import type { HeldSet } from './held.js';
import type { Spool, SpooledMessageSummary } from './spool.js';

/** A message's state in the queue, as the admin API lists it. */
export type MessageState = 'active' | 'held' | 'deferred' | 'pending';
export const MESSAGE_STATES: readonly MessageState[] = ['active', 'held', 'deferred', 'pending'];

export interface QueueFilter {
  /** Part of the sender address, any case. "<>" is the null sender. */
  sender?: string;
  /** Part of a recipient address, any case. */
  recipient?: string;
  /** A recipient domain, exactly (any case). */
  domain?: string;
  state?: MessageState;
  /** Only messages at least / at most this old. */
  minAgeMs?: number;
  maxAgeMs?: number;
}

export interface PageRequest {
  /** At most this many entries. */
  limit: number;
  /** Entries after this queue id (the `nextCursor` of the previous page). */
  cursor?: string;
  /** Or: skip this many matching entries. */
  offset?: number;
}

export interface QueueListEntry extends QueueEntry {
  state: MessageState;
}

export interface QueuePage {
  /** Messages matching the filter, all pages together. */
  total: number;
  items: QueueListEntry[];
  /** Pass as `cursor` for the next page; null on the last one. */
  nextCursor: string | null;
}

interface EnvelopeSummary {
  sender: string;
  recipients: string[];
  /** Lower-case copies for the filters. */
  senderKey: string;
  recipientKeys: string[];
  domainKeys: string[];
}

function summaryOf(envelope: Envelope): EnvelopeSummary {
  const recipients = envelope.recipients.map((r) => r.address);
  return {
    sender: envelope.sender,
    recipients,
    senderKey: envelope.sender.toLowerCase(),
    recipientKeys: recipients.map((r) => r.toLowerCase()),
    domainKeys: recipients.map((r) => r.slice(r.lastIndexOf('@') + 1).toLowerCase()),
  };
}

/** Envelope reads in flight at once when a filter needs envelopes not read yet. */
const READ_BATCH = 64;

export interface QueueViewDeps {
  spool: Spool;
  held: HeldSet;
  isActive: (qid: string) => boolean;
  now: () => number;
}

export function messageState(
  qid: string,
  states: readonly RecipientState[],
  deps: { held: { has(qid: string): boolean }; isActive: (qid: string) => boolean },
): MessageState {
  const held = deps.held.has(qid);
  if (deps.isActive(qid)) return 'active';
  if (held) return 'held';
  return isDeferredQueued(states, held) ? 'deferred' : 'pending';
}

/** Summaries kept beyond twice the live queue before the view forgets those of finished messages. */
const PRUNE_SLACK = 1000;

export class QueueView {
  readonly #d: QueueViewDeps;
  readonly #summaries = new Map<string, EnvelopeSummary>();

  constructor(deps: QueueViewDeps) {
    this.#d = deps;
  }

  /** One page of the messages matching `filter`, oldest first. */
  async page(filter: QueueFilter, page: PageRequest): Promise<QueuePage> {
    const now = this.#d.now();
    const live = this.#d.spool.scan();
    this.#prune(live);
    let matches = live.filter((m) => {
      if (filter.state !== undefined && messageState(m.qid, m.states, this.#d) !== filter.state) return false;
      const age = now - m.receivedAt;
      if (filter.minAgeMs !== undefined && age < filter.minAgeMs) return false;
      if (filter.maxAgeMs !== undefined && age > filter.maxAgeMs) return false;
      return true;
    });
    const sender = filter.sender?.toLowerCase();
    const recipient = filter.recipient?.toLowerCase();
    const domain = filter.domain?.toLowerCase();
    if (sender !== undefined || recipient !== undefined || domain !== undefined) {
      await this.#summarize(matches);
      matches = matches.filter((m) => {
        const s = this.#summaries.get(m.qid);
        if (s === undefined) return false; // left the spool meanwhile
        if (sender !== undefined && !(sender === '<>' ? s.senderKey === '' : s.senderKey.includes(sender)))
          return false;
        if (recipient !== undefined && !s.recipientKeys.some((r) => r.includes(recipient))) return false;
        if (domain !== undefined && !s.domainKeys.includes(domain)) return false;
        return true;
      });
    }
    let start = 0;
    if (page.cursor !== undefined) {
      const cursor = page.cursor;
      // Queue ids sort by arrival: the first entry after the cursor, by binary search.
      let lo = 0;
      let hi = matches.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if ((matches[mid]?.qid ?? '') <= cursor) lo = mid + 1;
        else hi = mid;
      }
      start = lo;
    } else if (page.offset !== undefined) start = page.offset;
    const slice = matches.slice(start, start + page.limit);
    await this.#summarize(slice);
    const items: QueueListEntry[] = [];
    for (const m of slice) {
      const s = this.#summaries.get(m.qid);
      if (s === undefined) continue;
      items.push({
        qid: m.qid,
        receivedAt: m.receivedAt,
        size: m.size,
        sender: s.sender,
        held: this.#d.held.has(m.qid),
        state: messageState(m.qid, m.states, this.#d),
        recipients: recipientsOf(s.recipients, m.states),
      });
    }
    const last = slice.at(-1);
    const more = start + page.limit < matches.length;
    return { total: matches.length, items, nextCursor: more && last !== undefined ? last.qid : null };
  }

  /** Keeps the summary of an envelope read for another reason (a delivery pass): no second read. */
  note(qid: string, envelope: Envelope): void {
    if (this.#summaries.has(qid)) return;
    this.#summaries.set(qid, summaryOf(envelope));
    if (this.#summaries.size > 2 * this.#d.spool.size + PRUNE_SLACK) this.#prune(this.#d.spool.scan());
  }

  /** Envelope summaries held (for tests: bounded by the queue, not by the mail ever delivered). */
  get summaries(): number {
    return this.#summaries.size;
  }

  /** Reads the envelopes of `messages` not summarized yet, a batch at a time. */
  async #summarize(messages: readonly Readonly<SpooledMessageSummary>[]): Promise<void> {
    const missing = messages.filter((m) => !this.#summaries.has(m.qid));
    for (let i = 0; i < missing.length; i += READ_BATCH) {
      await Promise.all(
        missing.slice(i, i + READ_BATCH).map(async (m) => {
          let envelope;
          try {
            envelope = (await this.#d.spool.read(m.qid)).envelope;
          } catch {
            return; // finished meanwhile, or unreadable: listed by `sterna queue list`
          }
          this.#summaries.set(m.qid, summaryOf(envelope));
        }),
      );
    }
  }

  /** Forgets the summaries of messages no longer in the spool (checked when there are extra). */
  #prune(live: readonly Readonly<SpooledMessageSummary>[]): void {
    if (this.#summaries.size <= live.length) return;
    const ids = new Set(live.map((m) => m.qid));
    for (const qid of this.#summaries.keys()) if (!ids.has(qid)) this.#summaries.delete(qid);
  }
}
