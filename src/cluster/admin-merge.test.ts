import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BUCKETS } from '../observability/timeseries.js';
import { mergeAdminAnswers, parseAdminQuery, perWorkerAdminQuery } from './admin-merge.js';

const ev = (at: number, seq: number, qid: string) => ({ kind: 'queued', at, seq, qid });

test('recent events: merged newest first over the workers, cut to the page, paged by time', () => {
  const q = parseAdminQuery({ q: 'recent', limit: 3, kind: 'queued' });
  assert.deepEqual(perWorkerAdminQuery({ q: 'recent', limit: 3, kind: 'queued', before: 500 }), {
    q: 'recent',
    limit: 3,
    kind: 'queued',
    beforeAt: 500,
  });
  const w0 = { events: [ev(400, 5, 'A'), ev(300, 4, 'B'), ev(100, 3, 'C')], next: 3 };
  const w1 = { events: [ev(350, 9, 'D'), ev(300, 8, 'E'), ev(200, 7, 'F')], next: null };
  const merged = mergeAdminAnswers(q, [w0, w1]) as {
    events: { qid: string; worker: number }[];
    next: number;
  };
  // A, D, then B and E share 300 ms with one beyond the page: both left for the next page.
  assert.deepEqual(
    merged.events.map((e) => [e.qid, e.worker]),
    [
      ['A', 0],
      ['D', 1],
    ],
  );
  assert.equal(merged.next, 350);
  // The last page: nothing more anywhere.
  const last = mergeAdminAnswers(q, [
    { events: [ev(100, 3, 'C')], next: null },
    { events: [], next: null },
  ]) as { next: number | null };
  assert.equal(last.next, null);
});

test("a story is every worker's events of the message, oldest first", () => {
  const merged = mergeAdminAnswers({ q: 'story', qid: 'Q' }, [[{ at: 1 }, { at: 5 }], [{ at: 3 }]]) as {
    at: number;
  }[];
  assert.deepEqual(
    merged.map((e) => e.at),
    [1, 3, 5],
  );
});

test('series summed bucket by bucket, also when the workers straddle a bucket; queue null only when no worker sampled', () => {
  const cols = (time: number[], queued: number[], queue: (number | null)[]) => ({
    bucketSeconds: 10,
    time,
    counts: {
      queued,
      delivered: queued.map(() => 0),
      deferred: queued.map(() => 0),
      failed: queued.map(() => 0),
      refused: queued.map(() => 0),
    },
    queue,
  });
  const merged = mergeAdminAnswers({ q: 'series' }, [
    cols([10, 20], [1, 2], [null, 3]),
    cols([20, 30], [5, 7], [null, 4]),
  ]) as { time: number[]; counts: { queued: number[] }; queue: (number | null)[] };
  assert.deepEqual(merged.time, [10, 20, 30]);
  assert.deepEqual(merged.counts.queued, [1, 7, 7]);
  assert.deepEqual(merged.queue, [null, 3, 4]);
  const long = Array.from({ length: BUCKETS + 5 }, (_, i) => i * 10);
  const cut = mergeAdminAnswers({ q: 'series' }, [
    cols(
      long,
      long.map(() => 1),
      long.map(() => null),
    ),
  ]) as {
    time: number[];
  };
  assert.equal(cut.time.length, BUCKETS);
});

test('refusals summed by reason, newest text kept; destinations merged by domain', () => {
  const r = (count: number, lastAt: number, text: string) => ({
    stage: 'rcpt',
    code: 550,
    enhanced: '5.1.1',
    text,
    count,
    lastAt,
  });
  assert.deepEqual(
    mergeAdminAnswers({ q: 'refusals' }, [
      { scanned: 2, reasons: [r(2, 10, 'old')] },
      { scanned: 3, reasons: [r(3, 20, 'new')] },
    ]),
    { scanned: 5, reasons: [r(5, 20, 'new')] },
  );
  const d = (recipients: number, oldest: number, next: number | null, reason: string) => ({
    domain: 'remote.test',
    recipients,
    messages: recipients,
    held: 0,
    oldestReceivedAt: oldest,
    nextAttemptAt: next,
    maxAttempts: recipients,
    reasons: [{ reason, recipients, example: reason }],
    outbound: { active: 1, waiting: 0, parked: recipients },
  });
  assert.deepEqual(
    mergeAdminAnswers({ q: 'destinations' }, [
      { domains: 1, destinations: [d(2, 100, null, 'connect')] },
      { domains: 1, destinations: [d(3, 50, 900, 'connect')] },
    ]),
    {
      domains: 1,
      destinations: [
        {
          domain: 'remote.test',
          recipients: 5,
          messages: 5,
          held: 0,
          oldestReceivedAt: 50,
          nextAttemptAt: 900,
          maxAttempts: 3,
          reasons: [{ reason: 'connect', recipients: 5, example: 'connect' }],
          outbound: { active: 2, waiting: 0, parked: 5 },
        },
      ],
    },
  );
  assert.deepEqual(perWorkerAdminQuery({ q: 'destinations' }), { q: 'destinations', all: true });
});
