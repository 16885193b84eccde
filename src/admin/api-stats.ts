/**
 * The dashboard's numbers (docs/operations.md, "Dashboard"): the last hour as 10-second buckets
 * (observability/timeseries.ts: messages queued, recipients delivered / deferred / failed,
 * refusals, the queue size), and the refusals of the recent ring (observability/recent.ts)
 * grouped by reason. Computed by admin-data.ts: with workers, every worker's, summed.
 * Trust: requests come from the token's holder; only counts and reply texts are returned.
 */
import type { FastifyInstance } from 'fastify';
import { BUCKET_MS } from '../observability/timeseries.js';
import { queueSize, type AdminLocal } from './admin-data.js';
import type { AdminServices } from './services.js';

export type { RefusalReason } from './admin-data.js';

/**
 * Samples the queue size (every spool of the process: the index's size, no envelope read) once
 * per bucket, in every process whether or not it runs the admin listener; returns the stop.
 */
export function sampleQueueSize(s: AdminLocal): () => void {
  const sample = (): void => s.events.series.sampleQueue(queueSize(s));
  sample();
  const timer = setInterval(sample, BUCKET_MS);
  timer.unref();
  return () => clearInterval(timer);
}

export function statsRoutes(app: FastifyInstance, s: AdminServices): void {
  app.get('/api/stats/series', () => s.adminData({ q: 'series' }));
  app.get('/api/stats/refusals', () => s.adminData({ q: 'refusals' }));
}
