import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  isQueueId,
  newQueueId,
  noteQueueId,
  partitionQueueIds,
  QUEUE_ID_LENGTH,
  queueIdPartition,
  queueIdTime,
} from './ids.js';

test('queue ids are 16 file-name-safe characters: digits and uppercase letters only', () => {
  const id = newQueueId(1_700_000_000_000);
  assert.equal(id.length, QUEUE_ID_LENGTH);
  assert.equal(QUEUE_ID_LENGTH, 16);
  assert.match(id, /^[0-9A-Z]+$/);
  assert.ok(isQueueId(id));
});

test('queue ids sort by arrival, including many in the same millisecond', () => {
  const ids: string[] = [];
  for (let i = 0; i < 5000; i++) ids.push(newQueueId(1_800_000_000_000));
  for (let i = 0; i < 5000; i++) ids.push(newQueueId(1_800_000_000_001 + Math.floor(i / 100)));
  const sorted = [...ids].sort();
  assert.deepEqual(sorted, ids);
  assert.equal(new Set(ids).size, ids.length);
});

test('a clock that goes back does not produce an id sorting before an earlier one', () => {
  const a = newQueueId(1_900_000_000_000);
  const b = newQueueId(1_899_999_999_000);
  assert.ok(b > a);
});

test('noteQueueId makes later ids sort after an id recovered from disk', () => {
  const fromDisk = newQueueId(2_500_000_000_000);
  noteQueueId(fromDisk);
  const next = newQueueId(2_000_000_000_000);
  assert.ok(next > fromDisk);
});

test('queueIdTime decodes the arrival time', () => {
  assert.equal(queueIdTime(newQueueId(3_000_000_000_123)), 3_000_000_000_123);
});

test('isQueueId refuses other strings', () => {
  assert.equal(isQueueId(''), false);
  assert.equal(isQueueId('1M8MEZVM400391E'), false);
  assert.equal(isQueueId('1M8MEZVM400391EMX'), false);
  assert.equal(isQueueId('1m8mezvm400391em'), false);
  assert.equal(isQueueId('1M8MEZVM400391EI'), false);
  assert.equal(isQueueId('../../etc/passwd'), false);
  assert.equal(isQueueId('1M8MEZVM400391EM'), true);
});

test('workers draw from disjoint ranges: worker i of n makes only ids of range i', () => {
  try {
    for (const [index, count] of [
      [0, 2],
      [1, 2],
      [2, 3],
      [6, 7],
    ] as const) {
      partitionQueueIds(index, count);
      for (let i = 0; i < 2000; i++) {
        const id = newQueueId(3_000_000_000_000 + i);
        assert.equal(queueIdPartition(id, count), index, id);
      }
    }
    assert.throws(() => partitionQueueIds(2, 2), RangeError);
  } finally {
    partitionQueueIds(0, 1);
  }
});
