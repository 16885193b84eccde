import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ControlRequest } from '../server/control.js';
import { mergeQueueOutcomes, perSpoolRequest, type QueueOutcome } from './queue-merge.js';

const ok = (result: unknown): QueueOutcome => ({ ok: true, result });
const notFound: QueueOutcome = { ok: false, code: 'NOT_FOUND', error: 'no message' };
const entry = (qid: string): { qid: string; size: number } => ({ qid, size: 1 });

test('an operation on one queue id answers from the spool that holds it', () => {
  const req: ControlRequest = { op: 'show', qid: 'B' };
  assert.deepEqual(mergeQueueOutcomes(req, [notFound, ok({ qid: 'B' }), notFound]), ok({ qid: 'B' }));
  assert.deepEqual(mergeQueueOutcomes(req, [notFound, notFound]), notFound);
  // A worker that could not answer (restarting) is not "not found".
  const down: QueueOutcome = { ok: false, code: 'FAILED', error: 'worker 1 is restarting; try again' };
  assert.deepEqual(mergeQueueOutcomes(req, [notFound, down]), down);
});

test('one listing of every spool, sorted by queue id (arrival)', () => {
  const merged = mergeQueueOutcomes({ op: 'list' }, [
    ok([entry('A'), entry('D')]),
    ok([entry('B'), entry('C')]),
  ]);
  assert.deepEqual(merged, ok([entry('A'), entry('B'), entry('C'), entry('D')]));
});

test('pages by cursor and by offset over several spools are the pages of their union', () => {
  const spoolA = ['A1', 'A3', 'A5', 'A7'];
  const spoolB = ['A2', 'A4', 'A6'];
  const all = [...spoolA, ...spoolB].sort();
  /** What one spool answers (queue-view.ts page) to a page request. */
  const pageOf = (qids: string[], p: { limit: number; cursor?: string; offset?: number }): QueueOutcome => {
    const start = p.cursor !== undefined ? qids.filter((q) => q <= p.cursor!).length : (p.offset ?? 0);
    const items = qids.slice(start, start + p.limit).map(entry);
    const more = start + p.limit < qids.length;
    return ok({ total: qids.length, items, nextCursor: more ? (items.at(-1)?.qid ?? null) : null });
  };
  const ask = (page: { limit: number; cursor?: string; offset?: number }): unknown => {
    const req: ControlRequest = { op: 'list', page: { filter: {}, page } };
    const each = perSpoolRequest(req).page?.page ?? page;
    const merged = mergeQueueOutcomes(req, [pageOf(spoolA, each), pageOf(spoolB, each)]);
    assert.ok(merged.ok);
    return merged.result;
  };
  // Walk by cursor: every message once, in order.
  const seen: string[] = [];
  let cursor: string | undefined;
  for (let i = 0; i < 10; i++) {
    const r = ask({ limit: 3, ...(cursor !== undefined ? { cursor } : {}) }) as {
      total: number;
      items: { qid: string }[];
      nextCursor: string | null;
    };
    assert.equal(r.total, 7);
    seen.push(...r.items.map((e) => e.qid));
    if (r.nextCursor === null) break;
    cursor = r.nextCursor;
  }
  assert.deepEqual(seen, all);
  // By offset.
  assert.deepEqual(ask({ limit: 2, offset: 3 }), {
    total: 7,
    items: ['A4', 'A5'].map(entry),
    nextCursor: 'A5',
  });
  assert.deepEqual(ask({ limit: 5, offset: 5 }), {
    total: 7,
    items: ['A6', 'A7'].map(entry),
    nextCursor: null,
  });
});

test('bulk operations: the union of what each spool touched; a spool that failed fails the whole', () => {
  const req: ControlRequest = { op: 'flush' };
  assert.deepEqual(
    mergeQueueOutcomes(req, [ok({ flushed: ['A'] }), ok({ flushed: ['B', 'C'] })]),
    ok({ flushed: ['A', 'B', 'C'] }),
  );
  const held = mergeQueueOutcomes({ op: 'hold', sender: 'x@y' }, [ok({ held: [] }), ok({ held: ['Q'] })]);
  assert.deepEqual(held, ok({ held: ['Q'] }));
  const failed: QueueOutcome = { ok: false, code: 'FAILED', error: 'worker 1: gone' };
  assert.deepEqual(
    mergeQueueOutcomes({ op: 'delete', failed: true }, [ok({ deleted: ['A'] }), failed]),
    failed,
  );
});
