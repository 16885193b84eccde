/**
 * One answer from many spools: a queue operation (server/control.ts ControlRequest) runs on
 * every queue manager (a worker's own spool and the spools it adopted, and every worker of a
 * cluster), and the answers are merged here into the one a single spool would give: one
 * listing sorted by queue id (ids sort by arrival, ids.ts), one page, the union of what a bulk
 * operation touched; an operation on one queue id answers from the spool that holds it (the
 * others say NOT_FOUND, and queue ids are unique across workers, ids.ts partitionQueueIds).
 * Trust: internal; the answers come from Sterna's own workers, and are checked for shape.
 */
import { z } from 'zod';
import type { Logger } from '../observability/log.js';
import type { QueueManager } from '../queue/manager.js';
import { SpoolError } from '../queue/spool.js';
import { runQueueOp, type ControlExtras, type ControlRequest } from '../server/control.js';

/** One spool's (or one worker's) answer to a queue operation. */
export type QueueOutcome =
  { ok: true; result: unknown } | { ok: false; code: 'NOT_FOUND' | 'USAGE' | 'FAILED'; error: string };

const entries = z.array(z.looseObject({ qid: z.string() }));
/** A DMARC report run's summary (mailauth/dmarc-report.ts ReportRunSummary): its periods. */
const reportRun = z.looseObject({ periods: z.array(z.unknown()) });
const page = z.looseObject({ total: z.number(), items: entries, nextCursor: z.string().nullable() });
const qidLists = {
  flushed: z.looseObject({ flushed: z.array(z.string()) }),
  held: z.looseObject({ held: z.array(z.string()) }),
  deleted: z.looseObject({ deleted: z.array(z.string()) }),
};

/**
 * The request each spool is asked: the same, except that a page by offset becomes the first
 * offset + limit entries of each spool (the merge takes the page out of their union).
 */
export function perSpoolRequest(req: ControlRequest): ControlRequest {
  const p = req.page;
  if (req.op !== 'list' || p?.page.offset === undefined) return req;
  return { ...req, page: { filter: p.filter, page: { limit: p.page.offset + p.page.limit } } };
}

/** True when the operation concerns one queue id, so exactly one spool can hold it. */
function byQueueId(req: ControlRequest): boolean {
  return req.qid !== undefined;
}

/** The merged answer of `outcomes` (one per spool or worker, none empty) to `req`. */
export function mergeQueueOutcomes(req: ControlRequest, outcomes: readonly QueueOutcome[]): QueueOutcome {
  if (byQueueId(req) || req.op === 'limits') {
    const found = outcomes.find((o) => o.ok);
    if (found !== undefined) return found;
    return outcomes.find((o) => !o.ok && o.code !== 'NOT_FOUND') ?? notFound(req, outcomes);
  }
  const failed = outcomes.find((o) => !o.ok);
  if (failed !== undefined) return failed;
  const results = outcomes.flatMap((o) => (o.ok ? [o.result] : []));
  try {
    return { ok: true, result: mergeResults(req, results) };
  } catch (err) {
    return { ok: false, code: 'FAILED', error: `answers could not be merged: ${String(err)}` };
  }
}

function notFound(req: ControlRequest, outcomes: readonly QueueOutcome[]): QueueOutcome {
  const first = outcomes[0];
  return first !== undefined && !first.ok
    ? first
    : { ok: false, code: 'NOT_FOUND', error: `no message ${req.qid ?? ''} in the queue` };
}

function byQid(a: { qid: string }, b: { qid: string }): number {
  return a.qid < b.qid ? -1 : a.qid > b.qid ? 1 : 0;
}

function mergeResults(req: ControlRequest, results: readonly unknown[]): unknown {
  switch (req.op) {
    case 'list': {
      if (req.page === undefined) return results.flatMap((r) => entries.parse(r)).sort(byQid);
      const pages = results.map((r) => page.parse(r));
      const all = pages.flatMap((p) => p.items).sort(byQid);
      const total = pages.reduce((n, p) => n + p.total, 0);
      const { limit, offset, cursor } = req.page.page;
      const start = offset ?? 0;
      const items = all.slice(start, start + limit);
      // More pages: some spool had more than it returned, or the union is longer than a page.
      const more =
        cursor !== undefined || offset === undefined
          ? pages.some((p) => p.nextCursor !== null) || all.length > limit
          : total > start + limit;
      const last = items.at(-1);
      return { total, items, nextCursor: more && last !== undefined ? last.qid : null };
    }
    case 'flush':
      return { flushed: results.flatMap((r) => qidLists.flushed.parse(r).flushed) };
    case 'hold':
      return { held: results.flatMap((r) => qidLists.held.parse(r).held) };
    case 'delete':
      return { deleted: results.flatMap((r) => qidLists.deleted.parse(r).deleted) };
    case 'show':
    case 'release':
    case 'bounce':
    case 'limits':
      // Only by queue id (handled before): take the first answer.
      return results[0];
    case 'dmarc-report':
      // Each worker reports the mail it received (mailauth/dmarc-report-start.ts): one list.
      return { periods: results.flatMap((r) => reportRun.parse(r).periods) };
    default: {
      const never: never = req.op;
      throw new Error(`unhandled op ${String(never)}`);
    }
  }
}

/** Runs a queue operation and gives its outcome (never throws). */
export type QueueOps = (req: ControlRequest) => Promise<QueueOutcome>;

/** The outcome of one run: a SpoolError NOT_FOUND is NOT_FOUND, anything else thrown FAILED. */
export async function outcomeOf(run: () => Promise<unknown>): Promise<QueueOutcome> {
  try {
    return { ok: true, result: await run() };
  } catch (err) {
    if (err instanceof SpoolError && err.code === 'NOT_FOUND')
      return { ok: false, code: 'NOT_FOUND', error: err.message };
    return { ok: false, code: 'FAILED', error: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * The queue operations of one process over its queue managers (its own spool first, then the
 * spools it drains for an earlier run with more workers), merged as one spool would answer.
 */
export function localQueueOps(
  managers: readonly QueueManager[],
  ctx: { log?: Logger; extras?: ControlExtras },
): QueueOps {
  return async (req) => {
    const first = managers[0];
    // limits and dmarc-report belong to the process, not to a spool: asked once.
    if (req.op === 'limits' || req.op === 'dmarc-report' || managers.length === 1 || first === undefined)
      return first === undefined
        ? { ok: false, code: 'FAILED', error: 'no queue' }
        : outcomeOf(() => runQueueOp(first, req, ctx));
    const each = perSpoolRequest(req);
    const outcomes: QueueOutcome[] = [];
    for (const m of managers) outcomes.push(await outcomeOf(() => runQueueOp(m, each, ctx)));
    return mergeQueueOutcomes(req, outcomes);
  };
}

/** The result of an outcome, or the error it stands for (SpoolError NOT_FOUND for NOT_FOUND). */
export function resultOf(outcome: QueueOutcome): unknown {
  if (outcome.ok) return outcome.result;
  if (outcome.code === 'NOT_FOUND') throw new SpoolError('NOT_FOUND', outcome.error);
  throw new Error(outcome.error);
}
