/**
 * The dashboard's numbers (docs/operations.md, "Dashboard"): the last hour as 10-second buckets
 * (observability/timeseries.ts: messages queued, recipients delivered / deferred / failed,
 * refusals, the queue size), and the refusals of the recent ring (observability/recent.ts)
 * grouped by reason. The queue size is sampled once per bucket while the listener runs (the
 * spool index's size: no envelope read).
 * Trust: requests come from the token's holder; only counts and reply texts are returned.
 */
import type { FastifyInstance } from 'fastify';
import type { RefusalEvent } from '../observability/recent.js';
import { BUCKET_MS } from '../observability/timeseries.js';
import type { AdminServices } from './services.js';

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

/** Refusals the grouping looks at, at most (the ring holds [admin] recent_events in all). */
const REFUSALS_SCANNED = 100_000;

export function statsRoutes(app: FastifyInstance, s: AdminServices): void {
  const sample = (): void => s.events.series.sampleQueue(s.spool.size);
  sample();
  const timer = setInterval(sample, BUCKET_MS);
  timer.unref();
  app.addHook('onClose', () => {
    clearInterval(timer);
    return Promise.resolve();
  });

  app.get('/api/stats/series', () => {
    sample();
    return s.events.series.columns();
  });

  app.get('/api/stats/refusals', () => {
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
    const reasons = [...byKey.values()].sort((a, b) => b.count - a.count || b.lastAt - a.lastAt);
    return { scanned, reasons };
  });
}
