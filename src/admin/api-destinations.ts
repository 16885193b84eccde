/**
 * Delivery status per destination (docs/operations.md, "Dashboard"): the recipient domains with
 * deferred recipients in the queue, how many, since when, when they are due again and why
 * (outcome reason ids with one example reply each), and the next hop's outbound queue (running,
 * waiting, parked). Computed by admin-data.ts from the queue managers' own paged view
 * (queue/queue-view.ts, the same as GET /api/queue) of the deferred and held messages of every
 * spool (with workers, every worker's, merged by domain): no second reading of the spool.
 * Trust: requests come from the token's holder; reply texts came from remote servers and are
 * only returned as JSON strings.
 */
import type { FastifyInstance } from 'fastify';
import type { AdminServices } from './services.js';

export type { DestinationReason, DestinationStatus } from './admin-data.js';

export function destinationRoutes(app: FastifyInstance, s: AdminServices): void {
  app.get('/api/destinations', () => s.adminData({ q: 'destinations' }));
}
