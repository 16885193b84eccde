import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  appendFile,
  copyFile,
  cp,
  mkdir,
  readdir,
  readFile,
  rm,
  truncate,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { legacyOutcome } from '../message/outcome.js';
import { Spool, SpoolError, type SpoolOptions } from './spool.js';
import {
  decodeCommitMeta,
  decodeHeaderPayload,
  encodeCommit,
  encodeDone,
  encodeHeader,
  HEADER_BYTES,
  parseHeader,
  PENDING,
  PLAIN_FRAMING,
  RecordType,
} from './spool-format.js';
import { deterministicBody, makeEnvelope, readAll, withTempDir } from './testdata/spool-fixtures.js';

interface Rec {
  offset: number;
  type: number;
  end: number;
  qid?: string;
}

/**
 * The records of a segment file, parsed with the format's own header parser: the HEADER at
 * offset 0 with the plain framing, the rest with the framing (salt) it gives.
 */
async function records(path: string): Promise<Rec[]> {
  const buf = await readFile(path);
  const out: Rec[] = [];
  let framing = PLAIN_FRAMING;
  for (let pos = 0; pos < buf.length;) {
    const h = parseHeader(buf, pos, framing);
    if (typeof h === 'string') throw new Error(`${path}@${pos}: ${h}`);
    const end = pos + HEADER_BYTES + h.length;
    const rec: Rec = { offset: pos, type: h.type, end };
    if (pos === 0) framing = decodeHeaderPayload(buf.subarray(HEADER_BYTES, end)).framing;
    if (h.type === RecordType.Commit) rec.qid = decodeCommitMeta(buf.subarray(pos + HEADER_BYTES, end)).qid;
    out.push(rec);
    pos = end;
  }
  return out;
}

function opts(dir: string, extra: Partial<SpoolOptions> = {}): SpoolOptions {
  return { dir, segmentBytes: 64 * 1024, fsync: false, ...extra };
}

async function commitBody(spool: Spool, body: Buffer): Promise<string> {
  const w = spool.begin();
  await w.write(body);
  await w.commit(makeEnvelope());
  return w.qid;
}

async function segmentNames(dir: string): Promise<string[]> {
  return (await readdir(join(dir, 'segments'))).sort();
}

/** Builds a spool with `n` committed messages of `size` bytes; returns their qids in order. */
async function populate(dir: string, n: number, size: number): Promise<string[]> {
  const { spool } = await Spool.open(opts(dir));
  const qids: string[] = [];
  for (let i = 0; i < n; i++) qids.push(await commitBody(spool, deterministicBody(`m${i}`, size)));
  await spool.close();
  return qids;
}

async function assertBodies(spool: Spool, qids: string[], size: number, all: string[]): Promise<void> {
  for (const qid of qids) {
    const i = all.indexOf(qid);
    assert.ok((await readAll(spool.openBody(qid))).equals(deterministicBody(`m${i}`, size)), qid);
  }
}

test('crash: the last record torn at every offset is cut off and every earlier message recovered', async () => {
  await withTempDir(async (base) => {
    const pristine = join(base, 'pristine');
    const qids = await populate(pristine, 3, 500);
    const [segName] = await segmentNames(pristine);
    const recs = await records(join(pristine, 'segments', segName!));
    // The last message: its CHUNK then its COMMIT, at the end of the file.
    const commit = recs[recs.length - 1]!;
    const chunk = recs[recs.length - 2]!;
    assert.equal(commit.type, RecordType.Commit);
    assert.equal(chunk.type, RecordType.Chunk);
    const work = join(base, 'work');
    const bytes = await readFile(join(pristine, 'segments', segName!));
    // Every offset inside the COMMIT, every 17th inside the CHUNK before it.
    const cuts: number[] = [];
    for (let cut = chunk.offset; cut < commit.offset; cut += 17) cuts.push(cut);
    for (let cut = commit.offset; cut < commit.end; cut++) cuts.push(cut);
    for (const cut of cuts) {
      await rm(work, { recursive: true, force: true });
      await mkdir(join(work, 'segments'), { recursive: true });
      await writeFile(join(work, 'segments', segName!), bytes.subarray(0, cut));
      const torn = cut < commit.offset ? chunk.offset : commit.offset;
      const { spool, report } = await Spool.open(opts(work));
      try {
        assert.deepEqual(
          { ...report, corrupt: report.corrupt.length },
          { messages: 2, segments: 1, truncatedBytes: cut - torn, corrupt: 0 },
          `cut at ${cut}`,
        );
        assert.deepEqual(
          spool.list().map((m) => m.qid),
          qids.slice(0, 2),
        );
      } finally {
        await spool.close();
      }
    }
    // One full check of the bodies after a cut in the middle of the COMMIT.
    await rm(work, { recursive: true, force: true });
    await cp(pristine, work, { recursive: true });
    await truncate(join(work, 'segments', segName!), commit.offset + 20);
    const { spool } = await Spool.open(opts(work));
    await assertBodies(spool, qids.slice(0, 2), 500, qids);
    await spool.close();
    // The cut bytes are kept for inspection.
    assert.equal((await readdir(join(work, 'corrupt'))).length, 1);
  });
});

test('crash: garbage or zeros after the last record are cut off, nothing else is touched', async () => {
  await withTempDir(async (dir) => {
    const qids = await populate(dir, 3, 800);
    const [segName] = await segmentNames(dir);
    const path = join(dir, 'segments', segName!);
    await appendFile(path, Buffer.alloc(5000));
    await appendFile(path, Buffer.from('STRN\x03garbage that looks like a header'));
    const { spool, report } = await Spool.open(opts(dir));
    assert.deepEqual(report, { messages: 3, segments: 1, truncatedBytes: 5000 + 37, corrupt: [] });
    await assertBodies(spool, qids, 800, qids);
    await spool.close();
    // Reopening again finds a clean log.
    const { spool: again, report: r2 } = await Spool.open(opts(dir));
    assert.deepEqual(r2, { messages: 3, segments: 2, truncatedBytes: 0, corrupt: [] });
    await again.close();
  });
});

test('damage: a flipped byte in a body chunk of a non-last segment flags that message only', async () => {
  await withTempDir(async (dir) => {
    const qids = await populate(dir, 12, 10_000);
    const names = await segmentNames(dir);
    assert.ok(names.length >= 2);
    const path = join(dir, 'segments', names[0]!);
    const recs = await records(path);
    const chunks = recs.filter((r) => r.type === RecordType.Chunk);
    const victimChunk = chunks[1]!;
    // The COMMIT right after that chunk names the victim.
    const victim = recs.find((r) => r.offset >= victimChunk.end && r.type === RecordType.Commit)!.qid!;
    const buf = await readFile(path);
    buf[victimChunk.offset + 500] = buf[victimChunk.offset + 500]! ^ 0xff;
    await writeFile(path, buf);

    const { spool, report } = await Spool.open(opts(dir));
    assert.equal(report.messages, 12);
    assert.equal(report.truncatedBytes, 0);
    assert.equal(report.corrupt.length, 2);
    assert.equal(report.corrupt[0]!.file, join('segments', names[0]!));
    assert.match(
      report.corrupt[0]!.reason,
      new RegExp(`^bytes ${victimChunk.offset}-${victimChunk.end} unreadable \\(CRC mismatch\\)`),
    );
    assert.match(
      report.corrupt[1]!.reason,
      new RegExp(`^message ${victim}: body bytes at offset ${victimChunk.offset} `),
    );
    const others = qids.filter((q) => q !== victim);
    await assertBodies(spool, others, 10_000, qids);
    // The envelope is still there, so the queue manager can bounce it; the body is not.
    assert.deepEqual((await spool.read(victim)).envelope, makeEnvelope());
    await assert.rejects(
      readAll(spool.openBody(victim)),
      (e: unknown) => e instanceof SpoolError && e.code === 'CORRUPT',
    );
    assert.equal((await readdir(join(dir, 'corrupt'))).filter((f) => f.endsWith('.copy')).length, 1);
    await spool.close();
  });
});

test('damage: a destroyed COMMIT loses that message only, reported; messages after it are recovered', async () => {
  await withTempDir(async (dir) => {
    const qids = await populate(dir, 12, 10_000);
    const names = await segmentNames(dir);
    const path = join(dir, 'segments', names[0]!);
    const recs = await records(path);
    const commits = recs.filter((r) => r.type === RecordType.Commit);
    const hit = commits[1]!;
    const buf = await readFile(path);
    buf.fill(0x41, hit.offset + 2, hit.offset + 30);
    await writeFile(path, buf);

    const { spool, report } = await Spool.open(opts(dir));
    assert.equal(report.messages, 11);
    assert.equal(report.corrupt.length, 1);
    assert.match(
      report.corrupt[0]!.reason,
      new RegExp(`^bytes ${hit.offset}-${hit.end} unreadable \\(bad magic\\)`),
    );
    assert.deepEqual(
      spool.list().map((m) => m.qid),
      qids.filter((q) => q !== hit.qid),
    );
    await assertBodies(
      spool,
      qids.filter((q) => q !== hit.qid),
      10_000,
      qids,
    );
    await spool.close();
  });
});

test('damage: a non-last segment without one valid record is moved to corrupt/ and messages needing it are flagged', async () => {
  await withTempDir(async (dir) => {
    const qids = await populate(dir, 12, 10_000);
    const names = await segmentNames(dir);
    const firstPath = join(dir, 'segments', names[0]!);
    const firstCommits = (await records(firstPath))
      .filter((r) => r.type === RecordType.Commit)
      .map((r) => r.qid!);
    const second = await records(join(dir, 'segments', names[1]!));
    // A message whose COMMIT opens segment 2 has its chunk at the end of segment 1.
    const straddler = second.find((r) => r.type === RecordType.Commit)!.qid!;
    const firstChunkInSecond = second.find((r) => r.type === RecordType.Chunk)!;
    const straddles =
      second.findIndex((r) => r.type === RecordType.Commit) < second.indexOf(firstChunkInSecond);
    await writeFile(firstPath, Buffer.alloc(50_000, 0x55));

    const { spool, report } = await Spool.open(opts(dir));
    assert.equal(report.corrupt[0]!.file, join('segments', names[0]!));
    assert.match(
      report.corrupt[0]!.reason,
      /^no valid record in 50000 bytes \(no HEADER record: bad magic\); moved to corrupt\/$/,
    );
    const live = spool.list().map((m) => m.qid);
    assert.deepEqual(
      live,
      qids.filter((q) => !firstCommits.includes(q)),
    );
    if (straddles) {
      await assert.rejects(
        readAll(spool.openBody(straddler)),
        (e: unknown) => e instanceof SpoolError && e.code === 'CORRUPT',
      );
    }
    assert.ok((await readdir(join(dir, 'corrupt'))).some((f) => f.startsWith(names[0]!)));
    assert.ok(!(await segmentNames(dir)).includes(names[0]!));
    await spool.close();
  });
});

test('damage: a hole inside the last segment followed by valid records is skipped, not cut', async () => {
  await withTempDir(async (dir) => {
    const qids = await populate(dir, 4, 2000);
    const [segName] = await segmentNames(dir);
    const path = join(dir, 'segments', segName!);
    const recs = await records(path);
    const chunk = recs.filter((r) => r.type === RecordType.Chunk)[1]!;
    const buf = await readFile(path);
    buf.fill(0, chunk.offset, chunk.end);
    await writeFile(path, buf);
    const { spool, report } = await Spool.open(opts(dir));
    assert.equal(report.truncatedBytes, 0);
    assert.equal(report.messages, 4);
    assert.equal(report.corrupt.length, 2);
    await assertBodies(spool, [qids[0]!, qids[2]!, qids[3]!], 2000, qids);
    await assert.rejects(
      readAll(spool.openBody(qids[1]!)),
      (e: unknown) => e instanceof SpoolError && e.code === 'CORRUPT',
    );
    await spool.close();
  });
});

test('a file in segments/ that is not a segment is reported and left alone', async () => {
  await withTempDir(async (dir) => {
    await populate(dir, 1, 10);
    await writeFile(join(dir, 'segments', 'notes.txt'), 'hello');
    const { spool, report } = await Spool.open(opts(dir));
    assert.deepEqual(report.corrupt, [
      { file: join('segments', 'notes.txt'), reason: 'not a segment file name; ignored' },
    ]);
    await spool.close();
  });
});

/** A record framed exactly as the spool's encoder frames it, as a client could put in a body. */
function forgedRecord(type: RecordType, payload: Buffer): Buffer {
  return Buffer.concat([encodeHeader(type, [payload]), payload]);
}

test('defect 6: COMMIT and DONE records embedded in a body do not steer recovery after a torn tail', async () => {
  await withTempDir(async (dir) => {
    const { spool } = await Spool.open(opts(dir, { segmentBytes: 1024 * 1024 }));
    const delivered = await commitBody(spool, deterministicBody('delivered', 400));
    await spool.done(delivered);
    const live = await commitBody(spool, deterministicBody('live', 400));
    // The crash comes while this message's body is being written: it never got a 250.
    const w = spool.begin();
    const envelope = Buffer.from(JSON.stringify(makeEnvelope()));
    const meta = (qid: string): Parameters<typeof encodeCommit>[0] => ({
      qid,
      size: 0,
      receivedAt: 1_700_000_000_000,
      states: [PENDING],
      chunks: [],
    });
    const forged = Buffer.concat([
      Buffer.from('Subject: records\r\n\r\n'),
      forgedRecord(RecordType.Commit, encodeCommit(meta(delivered), envelope)), // would resurrect
      forgedRecord(RecordType.Done, encodeDone(live)), // would kill
      forgedRecord(RecordType.Commit, encodeCommit(meta(w.qid), envelope)), // would accept unacknowledged
    ]);
    const body = Buffer.concat([forged, Buffer.alloc(64 * 1024 - forged.length, 0x61)]);
    await w.write(body); // 64 KiB: one full CHUNK record, written to the file
    await spool.close();

    const [segName] = await segmentNames(dir);
    const path = join(dir, 'segments', segName!);
    const recs = await records(path);
    const chunk = recs[recs.length - 1]!;
    assert.equal(chunk.type, RecordType.Chunk);
    assert.ok((await readFile(path)).subarray(chunk.offset, chunk.end).includes(forged));
    // Torn in the middle of that CHUNK, after the forged records.
    const cut = chunk.end - 1000;
    await truncate(path, cut);

    const { spool: after, report } = await Spool.open(opts(dir));
    try {
      assert.deepEqual(
        { ...report, corrupt: report.corrupt.length },
        { messages: 1, segments: 1, truncatedBytes: cut - chunk.offset, corrupt: 0 },
      );
      assert.deepEqual(after.list(), [
        { qid: live, receivedAt: 1_700_000_000_000, size: 400, states: [{ status: 'pending' }] },
      ]);
      assert.ok((await readAll(after.openBody(live))).equals(deterministicBody('live', 400)));
    } finally {
      await after.close();
    }
  });
});

/** A segment written by the format-1 spool (before the per-segment salt), kept as it was. */
const FORMAT1_SEGMENT = fileURLToPath(
  new URL('../../../src/queue/testdata/format1-segment.bin', import.meta.url),
);
/** Its messages: the first was done, the second has two recipients, one delivered, one deferred. */
const FORMAT1_QIDS = ['1M926ZTM2000NWM4', '1M926ZTM5000VE2N', '1M926ZTMQ000KJH7'];

test('a format-1 segment (written before the salt) is still recovered, read, and deleted when done', async () => {
  await withTempDir(async (dir) => {
    await mkdir(join(dir, 'segments'), { recursive: true });
    await copyFile(FORMAT1_SEGMENT, join(dir, 'segments', '0000000001.log'));
    const { spool, report } = await Spool.open(opts(dir));
    try {
      assert.deepEqual(report, { messages: 2, segments: 1, truncatedBytes: 0, corrupt: [] });
      const [, second, third] = FORMAT1_QIDS as [string, string, string];
      assert.deepEqual(spool.list(), [
        {
          qid: second,
          receivedAt: 1_700_000_000_000,
          size: 65_600,
          states: [
            { status: 'delivered', at: 1_700_000_001_000 },
            {
              status: 'deferred',
              attempts: 1,
              nextAttemptAt: 1_700_000_900_000,
              // A format-1 segment holds the old string error: it loads as a legacy outcome.
              outcome: legacyOutcome('451 4.4.1 try later'),
            },
          ],
        },
        { qid: third, receivedAt: 1_700_000_000_000, size: 1000, states: [{ status: 'pending' }] },
      ]);
      assert.deepEqual((await spool.read(second)).envelope, makeEnvelope(['a@example.org', 'b@example.org']));
      assert.ok((await readAll(spool.openBody(second))).equals(deterministicBody('format1-1', 65_600)));
      assert.ok((await readAll(spool.openBody(third))).equals(deterministicBody('format1-2', 1000)));
      // New messages go to a new segment beside the old one, and both read back after a restart.
      const fresh = await commitBody(spool, deterministicBody('fresh', 700));
      await spool.close();
      const { spool: again, report: r2 } = await Spool.open(opts(dir));
      try {
        assert.deepEqual(r2, { messages: 3, segments: 2, truncatedBytes: 0, corrupt: [] });
        assert.ok((await readAll(again.openBody(third))).equals(deterministicBody('format1-2', 1000)));
        assert.ok((await readAll(again.openBody(fresh))).equals(deterministicBody('fresh', 700)));
        // Once its messages are done, the old segment is deleted like any other.
        await again.done(second);
        await again.done(third);
        await again.compact();
        assert.ok(!(await segmentNames(dir)).includes('0000000001.log'));
      } finally {
        await again.close();
      }
    } finally {
      await spool.close();
    }
  });
});

test('a segment in a later format stops the start instead of being guessed at', async () => {
  await withTempDir(async (dir) => {
    await mkdir(join(dir, 'segments'), { recursive: true });
    const payload = Buffer.from('{"format":3,"segment":1,"createdAt":5}');
    await writeFile(join(dir, 'segments', '0000000001.log'), forgedRecord(RecordType.Header, payload));
    await assert.rejects(
      Spool.open(opts(dir)),
      (e: unknown) =>
        e instanceof SpoolError && e.code === 'EIO' && /spool format 3 is newer/.test(e.message),
    );
    // Nothing was moved or cut.
    assert.deepEqual(await segmentNames(dir), ['0000000001.log']);
  });
});
