/**
 * The dashboard's data (docs/operations.md, "Dashboard") as questions one process answers from
 * its own memory and spools: recent events (observability/recent.ts), one message's events, the
 * last hour's series (observability/timeseries.ts), the recent refusals by reason, and the
 * deferred recipients by destination (from the queue managers' paged view, queue/queue-view.ts).
 * With workers, worker 0's admin API asks the primary, which asks every worker and merges the
 * answers (admin-merge.ts); one process answers itself.
 * Trust: internal; addresses and reply texts in the answers came from clients and remote
 * servers and are only returned as JSON strings.
 */
import type { MailEvents } from '../observability/mail-events.js';
import type { MailEvent, RefusalEvent } from '../observability/recent.js';
import type { SeriesColumns } from '../observability/timeseries.js';
import type { QueueManager } from '../queue/manager.js';
import type { QueueListEntry } from '../queue/queue-view.js';
import type { Spool } from '../queue/spool.js';

export type RecentKind = MailEvent['kind'];

/** What the admin API asks. */
export type AdminQuery =
  /**
   * Newest first. `before`: the `next` of the previous page: a sequence number in one process, a
   * time in ms with workers (their events merged by time). `beforeAt`: what the primary asks each
   * worker for that, events before a time.
   */
  | { q: 'recent'; kind?: RecentKind; limit: number; before?: number; beforeAt?: number }
  /** One message's events, oldest first. */
  | { q: 'story'; qid: string }
  | { q: 'series' }
  | { q: 'refusals' }
  /** `all`: every domain (what each worker gives the merge); else the first MAX_DESTINATIONS. */
  | { q: 'destinations'; all?: boolean };

/** Answers an admin question: this process's answer, or every worker's merged. */
export type AdminData = (query: AdminQuery) => Promise<unknown>;

/** A spool and the queue manager that delivers it (a process's own, and those it drains). */
export interface SpoolQueue {
  spool: Spool;
  manager: QueueManager;
}

/** What one process answers from. */
export interface AdminLocal {
  events: MailEvents;
  /** Its own spool first, then any it drains for an earlier run with more workers. */
  queues: readonly SpoolQueue[];
}

/** Refusals of the ring grouped by what was answered. */
export interface RefusalReason {
  stage: RefusalEvent['stage'];
  code: number;
  enhanced: string;
  /** The reply text of the newest refusal of this reason. */
  text: string;
  count: number;
  /** The newest one (ms since the epoch). */
  lastAt: number;
}

export interface DestinationReason {
  /** The outcome's stable reason id (message/outcome.ts). */
  reason: string;
  recipients: number;
  /** The last error of one of them, one line. */
  example: string;
}

export interface DestinationStatus {
  domain: string;
  /** Deferred recipients and the messages that hold them. */
  recipients: number;
  messages: number;
  /** Of those, in held messages. */
  held: number;
  /** The oldest of the messages (ms since the epoch). */
  oldestReceivedAt: number;
  /** The earliest next attempt of a recipient (ms since the epoch), or null. */
  nextAttemptAt: number | null;
  maxAttempts: number;
  reasons: DestinationReason[];
  outbound: { active: number; waiting: number; parked: number };
}

/** Events of one message the story looks at, at most. */
export const STORY_EVENTS = 1000;
/** Refusals the grouping looks at, at most (the ring holds [admin] recent_events in all). */
const REFUSALS_SCANNED = 100_000;
/** Destinations returned at most (the most deferred recipients first). */
export const MAX_DESTINATIONS = 500;

/** Messages in every spool of the process (the index's size: no envelope read). */
export function queueSize(s: Pick<AdminLocal, 'queues'>): number {
  return s.queues.reduce((n, q) => n + q.spool.size, 0);
}

/** This process's answer. */
export async function localAdminData(s: AdminLocal, query: AdminQuery): Promise<unknown> {
  switch (query.q) {
    case 'recent':
      if (query.beforeAt !== undefined)
        return recentBefore(s, {
          limit: query.limit,
          beforeAt: query.beforeAt,
          ...(query.kind !== undefined ? { kind: query.kind } : {}),
        });
      return s.events.recent.query({
        limit: query.limit,
        ...(query.kind !== undefined ? { kind: query.kind } : {}),
        ...(query.before !== undefined ? { before: query.before } : {}),
      });
    case 'story':
      return s.events.recent.query({ qid: query.qid, limit: STORY_EVENTS }).events.reverse();
    case 'series':
      s.events.series.sampleQueue(queueSize(s));
      return s.events.series.columns();
    case 'refusals':
      return refusals(s);
    case 'destinations':
      return destinations(s, query.all === true ? Number.POSITIVE_INFINITY : MAX_DESTINATIONS);
    default: {
      const never: never = query;
      throw new Error(`unhandled admin query ${JSON.stringify(never)}`);
    }
  }
}

/**
 * Recent events of one process older than `beforeAt` (ms), newest first: paged back through
 * the ring by sequence number until `limit` are found or the ring ends (workers page by time).
 */
export function recentBefore(
  s: Pick<AdminLocal, 'events'>,
  q: { kind?: RecentKind; limit: number; beforeAt: number },
): { events: (MailEvent & { seq: number })[]; next: number | null } {
  const out: (MailEvent & { seq: number })[] = [];
  let before: number | undefined;
  for (;;) {
    const page = s.events.recent.query({
      limit: q.limit,
      ...(q.kind !== undefined ? { kind: q.kind } : {}),
      ...(before !== undefined ? { before } : {}),
    });
    for (const e of page.events) if (e.at < q.beforeAt && out.length < q.limit) out.push(e);
    if (out.length >= q.limit || page.next === null) return { events: out, next: page.next };
    before = page.next;
  }
}

function refusals(s: AdminLocal): { scanned: number; reasons: RefusalReason[] } {
  const { events } = s.events.recent.query({ kind: 'refusal', limit: REFUSALS_SCANNED });
  const byKey = new Map<string, RefusalReason>();
  let scanned = 0;
  for (const e of events) {
    if (e.kind !== 'refusal') continue;
    scanned++;
    const key = `${e.stage} ${e.code} ${e.enhanced}`;
    const r = byKey.get(key);
    // Newest first: the first event of a key has its newest text and time.
    if (r === undefined)
      byKey.set(key, {
        stage: e.stage,
        code: e.code,
        enhanced: e.enhanced,
        text: e.text,
        count: 1,
        lastAt: e.at,
      });
    else r.count++;
  }
  return { scanned, reasons: sortReasons([...byKey.values()]) };
}

export function sortReasons(reasons: RefusalReason[]): RefusalReason[] {
  return reasons.sort((a, b) => b.count - a.count || b.lastAt - a.lastAt);
}

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

type Building = DestinationStatus & { qids: Set<string>; why: Map<string, DestinationReason> };

async function destinations(
  s: AdminLocal,
  most: number,
): Promise<{ domains: number; destinations: DestinationStatus[] }> {
  const byDomain = new Map<string, Building>();
  for (const { spool, manager } of s.queues) {
    const all = Math.max(1, spool.size);
    const entries: QueueListEntry[] = [];
    for (const state of ['deferred', 'held'] as const)
      entries.push(...(await manager.listPage({ state }, { limit: all })).items);
    for (const m of entries) {
      for (const r of m.recipients) {
        if (r.status !== 'deferred') continue;
        const domain = domainOf(r.address);
        let d = byDomain.get(domain);
        if (d === undefined) {
          d = {
            domain,
            recipients: 0,
            messages: 0,
            held: 0,
            oldestReceivedAt: m.receivedAt,
            nextAttemptAt: null,
            maxAttempts: 0,
            reasons: [],
            outbound: { active: 0, waiting: 0, parked: 0 },
            qids: new Set(),
            why: new Map(),
          };
          byDomain.set(domain, d);
        }
        d.recipients++;
        if (!d.qids.has(m.qid)) {
          d.qids.add(m.qid);
          d.messages++;
          if (m.held) d.held++;
        }
        d.oldestReceivedAt = Math.min(d.oldestReceivedAt, m.receivedAt);
        if (r.nextAttemptAt !== undefined && !m.held)
          d.nextAttemptAt =
            d.nextAttemptAt === null ? r.nextAttemptAt : Math.min(d.nextAttemptAt, r.nextAttemptAt);
        d.maxAttempts = Math.max(d.maxAttempts, r.attempts ?? 0);
        const reason = r.outcome?.reason ?? 'unknown';
        const w = d.why.get(reason);
        if (w === undefined) d.why.set(reason, { reason, recipients: 1, example: r.lastError ?? '' });
        else w.recipients++;
      }
    }
  }
  // Each queue manager has its own outbound queue: the next hop's figures add up.
  for (const d of byDomain.values())
    for (const { manager } of s.queues) {
      const o = manager.nextHopQueue(d.domain);
      d.outbound = {
        active: d.outbound.active + o.active,
        waiting: d.outbound.waiting + o.waiting,
        parked: d.outbound.parked + o.parked,
      };
    }
  const list = [...byDomain.values()].map(({ qids: _qids, why, ...d }) => ({
    ...d,
    reasons: [...why.values()].sort((a, b) => b.recipients - a.recipients),
  }));
  return { domains: byDomain.size, destinations: sortDestinations(list).slice(0, most) };
}

export function sortDestinations(list: DestinationStatus[]): DestinationStatus[] {
  return list.sort((a, b) => b.recipients - a.recipients || a.domain.localeCompare(b.domain));
}

/** The series type, for the merge. */
export type { SeriesColumns };
