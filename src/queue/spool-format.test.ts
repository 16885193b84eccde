import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  checkRecord,
  crc32,
  crc32Portable,
  crcMatches,
  decodeCommitEnvelope,
  decodeCommitMeta,
  decodeDone,
  decodeState,
  encodeCommit,
  encodeDone,
  encodeHeader,
  encodeState,
  HEADER_BYTES,
  parseHeader,
  parseSegmentFileName,
  PENDING,
  RecordType,
  segmentFileName,
} from './spool-format.js';
import { localOutcome, remoteOutcome, renderOutcome } from '../message/outcome.js';
import { makeEnvelope } from './testdata/spool-fixtures.js';

test('CRC-32 matches the standard check value, native and portable alike', () => {
  for (const f of [crc32, crc32Portable]) {
    assert.equal(f(Buffer.from('123456789'), 0), 0xcbf43926);
    assert.equal(f(Buffer.from('56789'), f(Buffer.from('1234'), 0)), 0xcbf43926);
  }
  const data = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) & 0xff));
  assert.equal(crc32Portable(data, 12345), crc32(data, 12345));
});

function record(type: RecordType, payload: Buffer): Buffer {
  return Buffer.concat([encodeHeader(type, [payload]), payload]);
}

test('a record is a 13-byte header (magic, type, length, CRC) then its payload', () => {
  const rec = record(RecordType.Done, encodeDone('ABC'));
  assert.equal(rec.subarray(0, 4).toString('latin1'), 'STRN');
  assert.equal(rec.readUInt32BE(4), crc32(rec.subarray(8)));
  assert.equal(rec[8], RecordType.Done);
  assert.equal(rec.readUInt32BE(9), rec.length - HEADER_BYTES);
  assert.deepEqual(parseHeader(rec), { type: 5, length: 13, crc: rec.readUInt32BE(4) });
  assert.equal(decodeDone(checkRecord(rec, RecordType.Done)), 'ABC');
});

test('the CRC covers the type and length bytes as well as the payload', () => {
  const rec = record(RecordType.Done, encodeDone('ABC'));
  assert.equal(crcMatches(rec), true);
  for (const at of [8, 9, 12, HEADER_BYTES + 3]) {
    const bad = Buffer.from(rec);
    bad[at] = bad[at]! ^ 0x01;
    assert.equal(crcMatches(bad), false, `flipped byte ${at}`);
  }
  assert.throws(() => checkRecord(rec, RecordType.Commit), /expected COMMIT, found DONE/);
});

test('COMMIT payload: meta and envelope decode separately', () => {
  const env = makeEnvelope(['a@x.org']);
  const payload = encodeCommit(
    { qid: 'Q', size: 10, receivedAt: 5, states: [PENDING], chunks: [[1, 100, 10]] },
    Buffer.from(JSON.stringify(env)),
  );
  assert.deepEqual(decodeCommitMeta(payload), {
    qid: 'Q',
    size: 10,
    receivedAt: 5,
    states: [{ status: 'pending' }],
    chunks: [[1, 100, 10]],
  });
  assert.equal(decodeCommitMeta(payload).states[0], PENDING);
  assert.deepEqual(decodeCommitEnvelope(payload), env);
});

test('STATE payload of an old spool: a lastError / error string loads as a legacy outcome, its codes read once', () => {
  const old = Buffer.from(
    JSON.stringify({
      qid: 'Q',
      updates: [
        {
          index: 0,
          state: {
            status: 'deferred',
            attempts: 1,
            nextAttemptAt: 5,
            lastError: '451 4.4.3 DNS lookup failed',
          },
        },
        {
          index: 1,
          state: {
            status: 'failed',
            at: 4,
            error: 'message expired after 5.0 days in the queue (4.4.7); last error: x',
          },
        },
        { index: 2, state: { status: 'failed', at: 4, error: 'no such mailbox: a@b' } },
      ],
    }),
  );
  const states = decodeState(old).updates.map((u) => u.state);
  assert.deepEqual(states[0], {
    status: 'deferred',
    attempts: 1,
    nextAttemptAt: 5,
    outcome: {
      code: 451,
      enhanced: '4.4.3',
      text: '451 4.4.3 DNS lookup failed',
      origin: 'local',
      stage: 'unknown',
      reason: 'legacy',
    },
  });
  assert.ok(states[1]?.status === 'failed' && states[1].outcome.enhanced === '4.4.7');
  assert.ok(states[2]?.status === 'failed' && states[2].outcome.reason === 'legacy');
  assert.ok(
    states.every(
      (st) => st.status === 'pending' || st.status === 'delivered' || renderOutcome(st.outcome).length > 0,
    ),
  );
  assert.equal(
    states[0]?.status === 'deferred' && renderOutcome(states[0].outcome),
    '451 4.4.3 DNS lookup failed',
  );
});

test('STATE payload round-trips every recipient state', () => {
  const updates = [
    { index: 0, state: { status: 'delivered' as const, at: 1, detail: 'ok' } },
    {
      index: 1,
      state: {
        status: 'deferred' as const,
        attempts: 2,
        nextAttemptAt: 3,
        outcome: localOutcome('dns-failure', 'dns', { domain: 'x.test', reason: 'timeout' }),
      },
    },
    {
      index: 2,
      state: {
        status: 'failed' as const,
        at: 4,
        outcome: localOutcome(
          'expired',
          'queue',
          { days: '5.0', last: 'x' },
          remoteOutcome({ code: 450, enhanced: '4.2.1', lines: ['4.2.1 busy'] }, 'rcpt', {
            host: 'mx.x.test',
            address: '192.0.2.1',
          }),
        ),
      },
    },
    { index: 3, state: { status: 'pending' as const } },
  ];
  assert.deepEqual(decodeState(encodeState('Q', updates)), { qid: 'Q', updates });
  assert.throws(() =>
    decodeState(Buffer.from('{"qid":"Q","updates":[{"index":0,"state":{"status":"lost"}}]}')),
  );
});

test('segment file names are ten zero-padded digits', () => {
  assert.equal(segmentFileName(42), '0000000042.log');
  assert.equal(parseSegmentFileName('0000000042.log'), 42);
  assert.equal(parseSegmentFileName('42.log'), null);
  assert.equal(parseSegmentFileName('0000000042.log.tmp'), null);
});
