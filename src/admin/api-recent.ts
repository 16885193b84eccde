/**
 * Recent deliveries, refusals and acceptances (the in-memory ring, observability/recent.ts),
 * and the story of one message by queue id: its events from the ring, oldest first, and its
 * state in the spool if it is still queued (the same `show` as `sterna queue show`). With
 * workers, every worker's events (admin-data.ts, merged by the primary).
 * Trust: requests come from the token's holder.
 */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { isQueueId } from '../queue/ids.js';
import { SpoolError } from '../queue/spool.js';
import { resultOf } from '../cluster/queue-merge.js';
import { sendError } from './listener.js';
import type { AdminServices } from './services.js';

const recentQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    kind: { type: 'string', enum: ['queued', 'delivery', 'refusal'] },
    limit: { type: 'integer', minimum: 1, maximum: 1000 },
    before: { type: 'integer', minimum: 0 },
  },
} as const;

export function recentRoutes(app: FastifyInstance, s: AdminServices): void {
  app.get<{ Querystring: { kind?: 'queued' | 'delivery' | 'refusal'; limit?: number; before?: number } }>(
    '/api/recent',
    { schema: { querystring: recentQuery } },
    async (request, reply) => {
      const q = request.query;
      return reply.send(
        await s.adminData({
          q: 'recent',
          limit: q.limit ?? 100,
          ...(q.kind !== undefined ? { kind: q.kind } : {}),
          ...(q.before !== undefined ? { before: q.before } : {}),
        }),
      );
    },
  );

  app.get<{ Params: { qid: string } }>(
    '/api/messages/:qid/story',
    { schema: { params: { type: 'object', properties: { qid: { type: 'string', maxLength: 64 } } } } },
    async (request, reply) => {
      const { qid } = request.params;
      if (!isQueueId(qid)) return sendError(reply, 404, 'not_found', `${qid} is not a queue id`);
      const events = z.array(z.unknown()).parse(await s.adminData({ q: 'story', qid }));
      let queued: unknown = null;
      try {
        queued = resultOf(await s.queueOps({ op: 'show', qid }));
      } catch (err) {
        if (!(err instanceof SpoolError && err.code === 'NOT_FOUND')) throw err;
      }
      if (queued === null && events.length === 0)
        return sendError(
          reply,
          404,
          'not_found',
          `no message ${qid} in the queue nor among the recent events; the mail log has older ones (sterna log ${qid})`,
        );
      return { qid, inQueue: queued !== null, message: queued, events };
    },
  );
}
