import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, cp, mkdir, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Spool, SpoolError, type SpoolOptions } from './spool.js';
import { decodeCommitMeta, HEADER_BYTES, parseHeader, RecordType } from './spool-format.js';
import { deterministicBody, makeEnvelope, readAll, withTempDir } from './testdata/spool-fixtures.js';

interface Rec {
  offset: number;
  type: number;
  end: number;
  qid?: string;
}

/** The records of a segment file, parsed with the format's own header parser. */
async function records(path: string): Promise<Rec[]> {
  const buf = await readFile(path);
  const out: Rec[] = [];
  for (let pos = 0; pos < buf.length;) {
    const h = parseHeader(buf, pos);
    if (typeof h === 'string') throw new Error(`${path}@${pos}: ${h}`);
    const end = pos + HEADER_BYTES + h.length;
    const rec: Rec = { offset: pos, type: h.type, end };
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
      /^no valid record in 50000 bytes \(bad magic\); moved to corrupt\/$/,
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
