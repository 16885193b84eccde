/**
 * Mail counts over the last hour, in memory, for the dashboard's charts: one bucket per 10 s,
 * 360 buckets, a bounded ring (older buckets are reused); nothing is kept across restarts (the
 * mail log and Prometheus are the record). Fed by mail-events.ts with the same events as the
 * recent ring (recent.ts): messages queued, recipients delivered / deferred / failed, refusals;
 * the queue size is sampled into the bucket of the moment by the admin listener
 * (admin/api-stats.ts).
 * Trust: internal; holds counts only.
 */
import type { MailEvent } from './recent.js';

export const BUCKET_MS = 10_000;
export const BUCKETS = 360;

export type SeriesCounter = 'queued' | 'delivered' | 'deferred' | 'failed' | 'refused';
export const SERIES_COUNTERS: readonly SeriesCounter[] = [
  'queued',
  'delivered',
  'deferred',
  'failed',
  'refused',
];

interface Bucket {
  /** Start of the bucket (ms since the epoch, a multiple of BUCKET_MS); -1 while unused. */
  start: number;
  counts: Record<SeriesCounter, number>;
  /** The last queue size sampled in this bucket; null when none was. */
  queue: number | null;
}

/** The series as columns (uplot's data layout), oldest bucket first, one entry per bucket. */
export interface SeriesColumns {
  bucketSeconds: number;
  /** Bucket starts, seconds since the epoch. */
  time: number[];
  counts: Record<SeriesCounter, number[]>;
  queue: (number | null)[];
}

function emptyCounts(): Record<SeriesCounter, number> {
  return { queued: 0, delivered: 0, deferred: 0, failed: 0, refused: 0 };
}

/** The counter an event moves. */
export function counterOf(e: MailEvent): SeriesCounter {
  switch (e.kind) {
    case 'queued':
      return 'queued';
    case 'refusal':
      return 'refused';
    case 'delivery':
      return e.result;
    default: {
      const never: never = e;
      return never;
    }
  }
}

export class MailTimeSeries {
  readonly #ring: Bucket[];
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
    this.#ring = Array.from({ length: BUCKETS }, () => ({ start: -1, counts: emptyCounts(), queue: null }));
  }

  /** The bucket of time `at`, emptied first when it last held an older period. */
  #bucket(at: number): Bucket {
    const start = at - (at % BUCKET_MS);
    const b = this.#ring[Math.floor(start / BUCKET_MS) % BUCKETS]!;
    if (b.start !== start) {
      b.start = start;
      b.counts = emptyCounts();
      b.queue = null;
    }
    return b;
  }

  add(e: MailEvent): void {
    this.#bucket(e.at).counts[counterOf(e)]++;
  }

  /** The queue size now, into the current bucket. */
  sampleQueue(size: number): void {
    this.#bucket(this.#now()).queue = size;
  }

  /** The last hour up to now, oldest first; buckets with no event count zero. */
  columns(): SeriesColumns {
    const nowStart = this.#now() - (this.#now() % BUCKET_MS);
    const out: SeriesColumns = {
      bucketSeconds: BUCKET_MS / 1000,
      time: [],
      counts: { queued: [], delivered: [], deferred: [], failed: [], refused: [] },
      queue: [],
    };
    for (let i = BUCKETS - 1; i >= 0; i--) {
      const start = nowStart - i * BUCKET_MS;
      const b = this.#ring[Math.floor(start / BUCKET_MS) % BUCKETS]!;
      const live = b.start === start;
      out.time.push(start / 1000);
      for (const c of SERIES_COUNTERS) out.counts[c].push(live ? b.counts[c] : 0);
      out.queue.push(live ? b.queue : null);
    }
    return out;
  }
}
