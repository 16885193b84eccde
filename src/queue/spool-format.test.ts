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
  decodeHeaderPayload,
  decodeState,
  encodeCommit,
  encodeDone,
  encodeHeader,
  encodeHeaderPayload,
  encodeState,
  HEADER_BYTES,
  newSalt,
  parseHeader,
  parseSegmentFileName,
  PENDING,
  PLAIN_FRAMING,
  RecordType,
  saltedFraming,
  segmentFileName,
  UnknownFormatError,
  type Framing,
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

function framed(type: RecordType, payload: Buffer, framing: Framing): Buffer {
  return Buffer.concat([encodeHeader(type, [payload], framing), payload]);
}

test("format 2: a record opens with its segment salt's first 4 bytes and its CRC is seeded with the salt", () => {
  const salt = newSalt();
  const framing = saltedFraming(salt);
  const rec = framed(RecordType.Done, encodeDone('ABC'), framing);
  assert.ok(rec.subarray(0, 4).equals(salt.subarray(0, 4)));
  assert.equal(rec.readUInt32BE(4), crc32(Buffer.concat([salt, rec.subarray(8)])));
  assert.equal(decodeDone(checkRecord(rec, RecordType.Done, framing)), 'ABC');
});

test('format 2: a record framed without the salt, or with another one, is not a record of the segment', () => {
  const framing = saltedFraming(newSalt());
  const other = saltedFraming(newSalt());
  const payload = encodeDone('ABC');
  for (const [name, forged] of [
    ['plain', framed(RecordType.Done, payload, PLAIN_FRAMING)],
    ['another salt', framed(RecordType.Done, payload, other)],
  ] as const) {
    assert.equal(parseHeader(forged, 0, framing), 'bad magic', name);
    // Even with the right mark, the CRC does not match without the rest of the salt.
    const withMark = Buffer.from(forged);
    withMark.writeUInt32BE(framing.mark, 0);
    assert.equal(crcMatches(withMark, framing), false, name);
    assert.throws(() => checkRecord(withMark, RecordType.Done, framing), /CRC mismatch/, name);
  }
  // The salt's mark is never the plain magic, so only a HEADER opens with "STRN" in format 2.
  for (let i = 0; i < 1000; i++) assert.notEqual(saltedFraming(newSalt()).mark, PLAIN_FRAMING.mark);
});

test('HEADER payload: format 2 carries the salt, format 1 is read without one, a later format is refused', () => {
  const salt = newSalt();
  const h = decodeHeaderPayload(encodeHeaderPayload(7, 1_700_000_000_000, salt));
  assert.deepEqual(h, { format: 2, segment: 7, framing: saltedFraming(salt) });
  assert.deepEqual(decodeHeaderPayload(Buffer.from('{"format":1,"segment":3,"createdAt":5}')), {
    format: 1,
    segment: 3,
    framing: PLAIN_FRAMING,
  });
  assert.throws(() => decodeHeaderPayload(Buffer.from('{"format":2,"segment":3,"createdAt":5}')), /salt/);
  assert.throws(
    () => decodeHeaderPayload(Buffer.from('{"format":3,"segment":3,"createdAt":5}')),
    (e: unknown) => e instanceof UnknownFormatError && /spool format 3/.test(e.message),
  );
});
