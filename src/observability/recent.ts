/**
 * Recent mail events kept in memory, for the admin API and the dashboard: deliveries (every
 * recipient's delivered, deferred or failed attempt), refusals (a recipient or a message refused
 * over SMTP, a connection refused) and acceptances (a message queued). A bounded ring: the
 * newest `capacity` events, older ones are overwritten; nothing is kept across restarts (the
 * JSON mail log is the record). Fed by mail-events.ts from the same points that write the
 * mail log lines.
 * Trust: internal; addresses and reply texts in events came from clients and remote servers
 * and are only stored and returned as JSON strings.
 */

export interface QueuedEvent {
  kind: 'queued';
  at: number;
  qid: string;
  sender: string;
  recipients: string[];
  size: number;
  listener: string;
  ip: string;
}

export interface DeliveryEvent {
  kind: 'delivery';
  at: number;
  qid: string;
  recipient: string;
  /** "local" or the recipient's domain. */
  destination: string;
  result: 'delivered' | 'deferred' | 'failed';
  /** The outcome as one line (code, enhanced code, text), or where it went when delivered. */
  detail: string;
  /** A stable reason id of a deferral or failure (message/outcome.ts). */
  reason?: string;
  /** Seconds from queuing to this attempt. */
  delaySeconds: number;
}

export interface RefusalEvent {
  kind: 'refusal';
  at: number;
  /** connect: connection refused; rcpt: one recipient; data: the message at its end; sender: MAIL. */
  stage: 'connect' | 'sender' | 'rcpt' | 'data';
  code: number;
  enhanced: string;
  /** The reply text sent, one line. */
  text: string;
  listener: string;
  ip: string;
  sender?: string;
  recipient?: string;
  /** A queue id assigned before the refusal (end of data), which never reached the queue. */
  qid?: string;
}

export type MailEvent = QueuedEvent | DeliveryEvent | RefusalEvent;

export interface RecentQuery {
  kind?: MailEvent['kind'];
  qid?: string;
  /** Newest first, at most this many. */
  limit: number;
  /** Only events before this sequence number (paging backwards): the `next` of a previous page. */
  before?: number;
}

/** A bounded ring of the newest events; each event gets a sequence number. */
export class RecentEvents {
  readonly #capacity: number;
  readonly #ring: (MailEvent | undefined)[];
  /** Sequence number of the next event; event n sits at n % capacity. */
  #next = 0;

  constructor(capacity: number) {
    this.#capacity = capacity;
    this.#ring = new Array<MailEvent | undefined>(capacity);
  }

  add(event: MailEvent): void {
    if (this.#capacity === 0) return;
    this.#ring[this.#next % this.#capacity] = event;
    this.#next++;
  }

  get size(): number {
    return Math.min(this.#next, this.#capacity);
  }

  /** Events newest first, with their sequence numbers; `next` pages further back. */
  query(q: RecentQuery): { events: (MailEvent & { seq: number })[]; next: number | null } {
    const oldest = Math.max(0, this.#next - this.#capacity);
    const out: (MailEvent & { seq: number })[] = [];
    let seq = Math.min(this.#next, q.before ?? this.#next) - 1;
    for (; seq >= oldest && out.length < q.limit; seq--) {
      const e = this.#ring[seq % this.#capacity];
      if (e === undefined) continue;
      if (q.kind !== undefined && e.kind !== q.kind) continue;
      if (q.qid !== undefined && !('qid' in e && e.qid === q.qid)) continue;
      out.push({ ...e, seq });
    }
    return { events: out, next: seq >= oldest ? seq + 1 : null };
  }
}
