/**
 * Delivery status per destination (docs/operations.md, "Dashboard"): the recipient domains with
 * deferred recipients in the queue, how many, since when, when they are due again and why
 * (outcome reason ids with one example reply each), and the next hop's outbound queue (running,
 * waiting, parked). Computed from the queue manager's own paged view (queue/queue-view.ts,
 * the same as GET /api/queue) of the deferred and held messages: no second reading of the spool.
 * Trust: requests come from the token's holder; reply texts came from remote servers and are
 * only returned as JSON strings.
 */
import type { FastifyInstance } from 'fastify';
import type { QueueListEntry } from '../queue/queue-view.js';
import type { AdminServices } from './services.js';

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

/** Destinations returned at most (the most deferred recipients first). */
const MAX_DESTINATIONS = 500;

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

export function destinationRoutes(app: FastifyInstance, s: AdminServices): void {
  app.get('/api/destinations', async () => {
    const all = Math.max(1, s.spool.size);
    const entries: QueueListEntry[] = [];
    for (const state of ['deferred', 'held'] as const)
      entries.push(...(await s.manager.listPage({ state }, { limit: all })).items);
    const byDomain = new Map<
      string,
      DestinationStatus & { qids: Set<string>; why: Map<string, DestinationReason> }
    >();
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
            outbound: s.manager.nextHopQueue(domain),
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
    const destinations: DestinationStatus[] = [...byDomain.values()]
      .sort((a, b) => b.recipients - a.recipients || a.domain.localeCompare(b.domain))
      .slice(0, MAX_DESTINATIONS)
      .map(({ qids: _qids, why, ...d }) => ({
        ...d,
        reasons: [...why.values()].sort((a, b) => b.recipients - a.recipients),
      }));
    return { domains: byDomain.size, destinations };
  });
}
