/**
 * The queue part of the admin API (docs/operations.md): a filtered, paged list, one message,
 * and the operations hold, release, flush, delete and bounce. Every operation runs through
 * server/control.ts runQueueOp (through AdminServices.queueOps: every worker's spools), the function behind `sterna queue` and its control socket, so
 * both ways behave the same; the list pages on the server (queue/queue-view.ts).
 * Trust: requests come from the token's holder; queue ids are checked against their format and
 * looked up, never used as paths.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { SpoolError } from '../queue/spool.js';
import { isQueueId } from '../queue/ids.js';
import { MESSAGE_STATES, type MessageState, type QueueFilter } from '../queue/queue-view.js';
import { resultOf } from '../cluster/queue-merge.js';
import type { ControlRequest } from '../server/control.js';
import { sendError } from './listener.js';
import type { AdminServices } from './services.js';

/** Entries per page by default, and at most. */
export const DEFAULT_PAGE = 50;
export const MAX_PAGE = 1000;

const listQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    sender: { type: 'string', maxLength: 320 },
    recipient: { type: 'string', minLength: 1, maxLength: 320 },
    domain: { type: 'string', minLength: 1, maxLength: 255 },
    state: { type: 'string', enum: [...MESSAGE_STATES] },
    min_age: { type: 'integer', minimum: 0 },
    max_age: { type: 'integer', minimum: 0 },
    limit: { type: 'integer', minimum: 1, maximum: MAX_PAGE },
    cursor: { type: 'string', pattern: '^[0-9A-HJKMNP-TV-Z]{16}$' },
    offset: { type: 'integer', minimum: 0 },
  },
} as const;

interface ListQuery {
  sender?: string;
  recipient?: string;
  domain?: string;
  state?: MessageState;
  /** Seconds. */
  min_age?: number;
  max_age?: number;
  limit?: number;
  cursor?: string;
  offset?: number;
}

const qidParams = {
  type: 'object',
  required: ['qid'],
  properties: { qid: { type: 'string', maxLength: 64 } },
} as const;

const flushBody = {
  type: ['object', 'null'],
  additionalProperties: false,
  properties: { domain: { type: 'string', minLength: 1, maxLength: 255 } },
} as const;

type Action = 'hold' | 'release' | 'flush' | 'bounce';

export function queueRoutes(app: FastifyInstance, s: AdminServices): void {
  /** Runs one operation; an unknown queue id is 404. */
  const run = async (reply: FastifyReply, req: ControlRequest): Promise<FastifyReply> => {
    if (req.qid !== undefined && !isQueueId(req.qid))
      return sendError(reply, 404, 'not_found', `no message ${req.qid} in the queue (not a queue id)`);
    try {
      return await reply.send(resultOf(await s.queueOps(req)));
    } catch (err) {
      if (err instanceof SpoolError && err.code === 'NOT_FOUND')
        return sendError(reply, 404, 'not_found', `no message ${req.qid ?? ''} in the queue`);
      throw err;
    }
  };

  app.get<{ Querystring: ListQuery }>(
    '/api/queue',
    { schema: { querystring: listQuery } },
    (request, reply) => {
      const q = request.query;
      if (q.cursor !== undefined && q.offset !== undefined)
        return sendError(reply, 400, 'invalid_request', 'give cursor or offset, not both');
      const filter: QueueFilter = {
        ...(q.sender !== undefined ? { sender: q.sender } : {}),
        ...(q.recipient !== undefined ? { recipient: q.recipient } : {}),
        ...(q.domain !== undefined ? { domain: q.domain } : {}),
        ...(q.state !== undefined ? { state: q.state } : {}),
        ...(q.min_age !== undefined ? { minAgeMs: q.min_age * 1000 } : {}),
        ...(q.max_age !== undefined ? { maxAgeMs: q.max_age * 1000 } : {}),
      };
      const page = {
        limit: q.limit ?? DEFAULT_PAGE,
        ...(q.cursor !== undefined ? { cursor: q.cursor } : {}),
        ...(q.offset !== undefined ? { offset: q.offset } : {}),
      };
      return run(reply, { op: 'list', page: { filter, page } });
    },
  );

  app.get<{ Params: { qid: string } }>(
    '/api/queue/:qid',
    { schema: { params: qidParams } },
    (request, reply) => run(reply, { op: 'show', qid: request.params.qid }),
  );

  app.delete<{ Params: { qid: string } }>(
    '/api/queue/:qid',
    { schema: { params: qidParams } },
    (request, reply) => run(reply, { op: 'delete', qid: request.params.qid }),
  );

  /** Every message of the deferred queue, as `sterna queue delete --failed`. */
  app.post('/api/queue/delete-deferred', (_request, reply) => run(reply, { op: 'delete', failed: true }));

  /** Every waiting message, or those with a recipient in `domain`. */
  app.post<{ Body: { domain?: string } | null }>(
    '/api/queue/flush',
    { schema: { body: flushBody } },
    (request, reply) => {
      const domain = request.body?.domain;
      return run(reply, { op: 'flush', ...(domain !== undefined ? { domain } : {}) });
    },
  );

  for (const action of ['hold', 'release', 'flush', 'bounce'] as const satisfies readonly Action[]) {
    app.post<{ Params: { qid: string } }>(
      `/api/queue/:qid/${action}`,
      { schema: { params: qidParams } },
      (request, reply) => run(reply, { op: action, qid: request.params.qid }),
    );
  }
}
