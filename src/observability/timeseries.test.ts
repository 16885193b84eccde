/**
 * The dashboard's time series: events land in the bucket of their time, buckets older than an
 * hour are reused empty, the queue gauge is sampled per bucket.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BUCKET_MS, BUCKETS, MailTimeSeries } from './timeseries.js';

const T0 = 1_700_000_000_000;

test('events count in the bucket of their time; an hour later the bucket starts empty', () => {
  let now = T0;
  const s = new MailTimeSeries(() => now);
  const delivery = {
    kind: 'delivery',
    qid: 'Q',
    recipient: 'a@b',
    destination: 'b',
    detail: '',
    delaySeconds: 0,
  } as const;
  s.add({ ...delivery, at: now, result: 'delivered' });
  s.add({ ...delivery, at: now, result: 'deferred' });
  s.add({ ...delivery, at: now + BUCKET_MS, result: 'failed' });
  s.sampleQueue(7);
  now += BUCKET_MS;
  let c = s.columns();
  assert.equal(c.time.length, BUCKETS);
  assert.equal(c.time.at(-1), (now - (now % BUCKET_MS)) / 1000);
  assert.deepEqual(c.counts.delivered.slice(-2), [1, 0]);
  assert.deepEqual(c.counts.deferred.slice(-2), [1, 0]);
  assert.deepEqual(c.counts.failed.slice(-2), [0, 1]);
  assert.deepEqual(c.queue.slice(-2), [7, null]);
  assert.equal(
    c.counts.queued.reduce((a, b) => a + b, 0),
    0,
  );
  // One hour on, the same ring slot holds a new period: the old counts are gone.
  now += BUCKETS * BUCKET_MS;
  s.add({
    kind: 'refusal',
    at: now,
    stage: 'rcpt',
    code: 550,
    enhanced: '5.1.1',
    text: '',
    listener: 'smtp',
    ip: '::1',
  });
  c = s.columns();
  assert.equal(
    c.counts.delivered.reduce((a, b) => a + b, 0),
    0,
  );
  assert.equal(
    c.counts.failed.reduce((a, b) => a + b, 0),
    0,
  );
  assert.equal(c.counts.refused.at(-1), 1);
});
