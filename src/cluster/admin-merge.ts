/**
 * The admin API's dashboard data (admin/admin-data.ts) from every worker: worker 0's admin
 * listener asks the primary, which asks each worker for its own answer and merges them into the
 * one a single process would give: recent events merged newest first and cut to the page (paged
 * by time: each worker has its own sequence numbers), a message's events oldest first, the
 * series summed bucket by bucket, refusals summed by reason, destinations merged by domain.
 * Trust: internal; the answers come from Sterna's own workers, and are checked for shape.
 */
import { z } from 'zod';
import {
  MAX_DESTINATIONS,
  sortDestinations,
  sortReasons,
  type AdminQuery,
  type DestinationReason,
  type DestinationStatus,
  type RefusalReason,
} from '../admin/admin-data.js';
import { BUCKETS, SERIES_COUNTERS, type SeriesColumns } from '../observability/timeseries.js';
import type { IpcChannel } from './ipc.js';

const kind = z.enum(['queued', 'delivery', 'refusal']);
const adminQuery = z.discriminatedUnion('q', [
  z.object({
    q: z.literal('recent'),
    kind: kind.optional(),
    limit: z.number().int().positive(),
    before: z.number().optional(),
    beforeAt: z.number().optional(),
  }),
  z.object({ q: z.literal('story'), qid: z.string() }),
  z.object({ q: z.literal('series') }),
  z.object({ q: z.literal('refusals') }),
  z.object({ q: z.literal('destinations'), all: z.boolean().optional() }),
]);

/** An admin question as it came over IPC, checked. */
export function parseAdminQuery(body: unknown): AdminQuery {
  const q = adminQuery.parse(body);
  if (q.q === 'destinations') return q.all !== undefined ? { q: q.q, all: q.all } : { q: q.q };
  if (q.q !== 'recent') return q;
  return {
    q: 'recent',
    limit: q.limit,
    ...(q.kind !== undefined ? { kind: q.kind } : {}),
    ...(q.before !== undefined ? { before: q.before } : {}),
    ...(q.beforeAt !== undefined ? { beforeAt: q.beforeAt } : {}),
  };
}

const event = z.looseObject({ at: z.number(), seq: z.number() });
type Event = z.infer<typeof event>;
const recentPage = z.object({ events: z.array(event), next: z.number().nullable() });
const story = z.array(z.looseObject({ at: z.number() }));
const series = z.object({
  bucketSeconds: z.number(),
  time: z.array(z.number()),
  counts: z.record(z.string(), z.array(z.number())),
  queue: z.array(z.number().nullable()),
});
const refusalReason = z.object({
  stage: z.enum(['connect', 'sender', 'rcpt', 'data']),
  code: z.number(),
  enhanced: z.string(),
  text: z.string(),
  count: z.number(),
  lastAt: z.number(),
});
const refusals = z.object({ scanned: z.number(), reasons: z.array(refusalReason) });
const destination = z.object({
  domain: z.string(),
  recipients: z.number(),
  messages: z.number(),
  held: z.number(),
  oldestReceivedAt: z.number(),
  nextAttemptAt: z.number().nullable(),
  maxAttempts: z.number(),
  reasons: z.array(z.object({ reason: z.string(), recipients: z.number(), example: z.string() })),
  outbound: z.object({ active: z.number(), waiting: z.number(), parked: z.number() }),
});
const destinations = z.object({ domains: z.number(), destinations: z.array(destination) });

/** What each worker is asked: recent events by time rather than sequence number; every destination. */
export function perWorkerAdminQuery(q: AdminQuery): AdminQuery {
  if (q.q === 'destinations') return { q: 'destinations', all: true };
  if (q.q !== 'recent') return q;
  const { before, ...rest } = q;
  return before !== undefined ? { ...rest, beforeAt: before } : rest;
}

/** Asks every worker (none may be restarting) and merges their answers. */
export async function adminFanOut(workers: readonly (IpcChannel | null)[], body: unknown): Promise<unknown> {
  const q = parseAdminQuery(body);
  const each = perWorkerAdminQuery(q);
  const answers = await Promise.all(
    workers.map((ipc, i) =>
      ipc === null
        ? Promise.reject(new Error(`worker ${i} is restarting; try again`))
        : ipc.request('admin', each),
    ),
  );
  return mergeAdminAnswers(q, answers);
}

/** One answer from the workers' answers (in worker order). */
export function mergeAdminAnswers(q: AdminQuery, answers: readonly unknown[]): unknown {
  switch (q.q) {
    case 'recent':
      return mergeRecent(
        answers.map((a) => recentPage.parse(a)),
        q.limit,
      );
    case 'story':
      return answers.flatMap((a) => story.parse(a)).sort((a, b) => a.at - b.at);
    case 'series':
      return mergeSeries(answers.map((a) => series.parse(a)));
    case 'refusals':
      return mergeRefusals(answers.map((a) => refusals.parse(a)));
    case 'destinations':
      return mergeDestinations(answers.map((a) => destinations.parse(a)));
    default: {
      const never: never = q;
      throw new Error(`unhandled admin query ${JSON.stringify(never)}`);
    }
  }
}

/**
 * Newest first over every worker, cut to `limit`; `next` is the time (ms) the next page starts
 * before. Events of the page's last millisecond are left to the next page when that one has
 * more of the same millisecond, so none is skipped (unless a whole page is one millisecond).
 */
function mergeRecent(
  pages: readonly { events: Event[]; next: number | null }[],
  limit: number,
): { events: (Event & { worker: number })[]; next: number | null } {
  const all = pages
    .flatMap((p, worker) => p.events.map((e) => ({ ...e, worker })))
    .sort((a, b) => b.at - a.at || a.worker - b.worker || b.seq - a.seq);
  let page = all.slice(0, limit);
  const more = all.length > limit || pages.some((p) => p.next !== null);
  const last = page.at(-1);
  if (!more || last === undefined) return { events: page, next: null };
  const after = all[limit];
  if (after !== undefined && after.at === last.at) {
    const trimmed = page.filter((e) => e.at !== last.at);
    if (trimmed.length > 0) page = trimmed;
  }
  const oldest = page.at(-1)?.at ?? last.at;
  return { events: page, next: oldest };
}

/** Bucket by bucket over the union of the workers' hours (their clocks may straddle a bucket). */
function mergeSeries(parts: readonly z.infer<typeof series>[]): SeriesColumns {
  const times = [...new Set(parts.flatMap((p) => p.time))].sort((a, b) => a - b).slice(-BUCKETS);
  const at = new Map(times.map((t, i) => [t, i]));
  const out: SeriesColumns = {
    bucketSeconds: parts[0]?.bucketSeconds ?? 10,
    time: times,
    counts: { queued: [], delivered: [], deferred: [], failed: [], refused: [] },
    queue: times.map(() => null),
  };
  for (const c of SERIES_COUNTERS) out.counts[c] = times.map(() => 0);
  for (const p of parts)
    p.time.forEach((t, j) => {
      const i = at.get(t);
      if (i === undefined) return;
      for (const c of SERIES_COUNTERS) out.counts[c][i] = (out.counts[c][i] ?? 0) + (p.counts[c]?.[j] ?? 0);
      const size = p.queue[j] ?? null;
      if (size !== null) out.queue[i] = (out.queue[i] ?? 0) + size;
    });
  return out;
}

function mergeRefusals(parts: readonly z.infer<typeof refusals>[]): {
  scanned: number;
  reasons: RefusalReason[];
} {
  const byKey = new Map<string, RefusalReason>();
  for (const r of parts.flatMap((p) => p.reasons)) {
    const key = `${r.stage} ${r.code} ${r.enhanced}`;
    const seen = byKey.get(key);
    if (seen === undefined) byKey.set(key, { ...r });
    else {
      seen.count += r.count;
      if (r.lastAt > seen.lastAt) {
        seen.lastAt = r.lastAt;
        seen.text = r.text;
      }
    }
  }
  return {
    scanned: parts.reduce((n, p) => n + p.scanned, 0),
    reasons: sortReasons([...byKey.values()]),
  };
}

function mergeDestinations(parts: readonly z.infer<typeof destinations>[]): {
  domains: number;
  destinations: DestinationStatus[];
} {
  const byDomain = new Map<string, DestinationStatus & { why: Map<string, DestinationReason> }>();
  for (const d of parts.flatMap((p) => p.destinations)) {
    const seen = byDomain.get(d.domain);
    if (seen === undefined) {
      byDomain.set(d.domain, { ...d, why: new Map(d.reasons.map((r) => [r.reason, { ...r }])) });
      continue;
    }
    seen.recipients += d.recipients;
    seen.messages += d.messages;
    seen.held += d.held;
    seen.oldestReceivedAt = Math.min(seen.oldestReceivedAt, d.oldestReceivedAt);
    if (d.nextAttemptAt !== null)
      seen.nextAttemptAt =
        seen.nextAttemptAt === null ? d.nextAttemptAt : Math.min(seen.nextAttemptAt, d.nextAttemptAt);
    seen.maxAttempts = Math.max(seen.maxAttempts, d.maxAttempts);
    seen.outbound = {
      active: seen.outbound.active + d.outbound.active,
      waiting: seen.outbound.waiting + d.outbound.waiting,
      parked: seen.outbound.parked + d.outbound.parked,
    };
    for (const r of d.reasons) {
      const w = seen.why.get(r.reason);
      if (w === undefined) seen.why.set(r.reason, { ...r });
      else w.recipients += r.recipients;
    }
  }
  const list = [...byDomain.values()].map(({ why, ...d }) => ({
    ...d,
    reasons: [...why.values()].sort((a, b) => b.recipients - a.recipients),
  }));
  return { domains: byDomain.size, destinations: sortDestinations(list).slice(0, MAX_DESTINATIONS) };
}
