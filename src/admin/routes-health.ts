/**
 * /healthz (alive: the event loop answers), /readyz (ready for new mail: 200, or 503 with the
 * reason as JSON; health.ts) and /metrics (Prometheus text format, observability/metrics.ts).
 * Trust: /healthz and /readyz answer without the token and reveal only the reason; /metrics
 * needs the token when one is configured.
 */
import type { FastifyInstance } from 'fastify';
import type { QueueSnapshot } from '../observability/metrics.js';
import { messageState } from '../queue/queue-view.js';
import type { AdminServices } from './services.js';

export function healthRoutes(app: FastifyInstance, s: AdminServices): void {
  app.get('/healthz', (_request, reply) => reply.send({ status: 'alive' }));
  app.get('/readyz', async (_request, reply) => {
    const state = await s.readiness();
    return reply.code(state.ready ? 200 : 503).send(state);
  });
  app.get('/metrics', async (_request, reply) => {
    const text = await (s.metricsText?.() ?? s.events.metrics.render());
    return reply.header('content-type', s.events.metrics.contentType).send(text);
  });
}

/**
 * The queue gauges at scrape time: one pass over the index of every spool of the process (its
 * own, and any it drains for an earlier run with more workers), no envelope read.
 */
export function queueSnapshot(s: Pick<AdminServices, 'queues'>, now: number): QueueSnapshot {
  const byState: Record<string, number> = { active: 0, pending: 0, deferred: 0, held: 0 };
  let oldest = now;
  for (const { spool, manager } of s.queues) {
    const deps = {
      held: { has: (q: string) => manager.isHeld(q) },
      isActive: (q: string) => manager.isActive(q),
    };
    for (const m of spool.scan()) {
      const state = messageState(m.qid, m.states, deps);
      byState[state] = (byState[state] ?? 0) + 1;
      if (m.receivedAt < oldest) oldest = m.receivedAt;
    }
  }
  return { byState, oldestAgeSeconds: Math.max(0, (now - oldest) / 1000) };
}
