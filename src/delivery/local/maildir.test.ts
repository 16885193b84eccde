import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as nodeFs from 'node:fs';
import * as fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  deliverToMaildir,
  deliveryHeaders,
  maildirPathFor,
  maildirUniqueName,
  type MaildirDelivery,
  type MaildirSyncFs,
} from './maildir.js';
import { MaildirWriter, DEFAULT_OWNERSHIP, NODE_MAILDIR_FS, type WriterRequest } from './maildir-write.js';
import { MaildirWriterThreads } from './maildir-writers.js';

const isRoot = process.getuid?.() === 0;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'sterna-maildir-'));
  try {
    await fn(dir);
  } finally {
    await fsp.chmod(dir, 0o700).catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

async function* chunks(...parts: (string | Buffer)[]): AsyncGenerator<Buffer> {
  await Promise.resolve();
  for (const part of parts) yield typeof part === 'string' ? Buffer.from(part) : part;
}

const PREPEND = 'Return-Path: <a@example.org>\r\nDelivered-To: bob@example.com\r\n';
const BODY = 'Subject: hi\r\n\r\nHello\r\n';

function delivery(maildir: string, over: Partial<MaildirDelivery> = {}): MaildirDelivery {
  return { maildir, uniqueName: 'Q1AB2C3.R0.mx.example.com', prepend: PREPEND, body: chunks(BODY), ...over };
}

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: simulated`), { code });
}

test('delivery writes exactly prepend + body into new/<uniqueName> and creates tmp/ new/ cur/ mode 0700', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'example.com', 'bob');
    const result = await deliverToMaildir(
      delivery(maildir, { body: chunks('Subject: hi\r\n', '\r\n', 'Hello\r\n') }),
    );
    const file = path.join(maildir, 'new', 'Q1AB2C3.R0.mx.example.com');
    assert.deepEqual(result, { kind: 'delivered', path: file, duplicate: false });
    assert.equal(await fsp.readFile(file, 'utf8'), PREPEND + BODY);
    assert.equal((await fsp.stat(file)).mode & 0o777, 0o600);
    for (const sub of ['', 'tmp', 'new', 'cur']) {
      assert.equal(
        (await fsp.stat(path.join(maildir, sub))).mode & 0o777,
        0o700,
        `mode of ${sub || 'Maildir'}`,
      );
    }
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'tmp')), []);
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'cur')), []);
  });
});

test('exactly once: a second delivery with the same uniqueName reports duplicate and writes no second file', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    const first = await deliverToMaildir(delivery(maildir));
    assert.equal(first.kind, 'delivered');
    let bodyRead = false;
    async function* body(): AsyncGenerator<Buffer> {
      await Promise.resolve();
      bodyRead = true;
      yield Buffer.from('DIFFERENT\r\n');
    }
    const second = await deliverToMaildir(delivery(maildir, { body: body() }));
    const file = path.join(maildir, 'new', 'Q1AB2C3.R0.mx.example.com');
    assert.deepEqual(second, { kind: 'delivered', path: file, duplicate: true });
    assert.equal(bodyRead, false);
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'new')), ['Q1AB2C3.R0.mx.example.com']);
    assert.equal(await fsp.readFile(file, 'utf8'), PREPEND + BODY);
  });
});

test('exactly once: a copy an IMAP server moved to cur/<name>:2,S is found', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    await deliverToMaildir(delivery(maildir));
    const moved = path.join(maildir, 'cur', 'Q1AB2C3.R0.mx.example.com:2,S');
    await fsp.rename(path.join(maildir, 'new', 'Q1AB2C3.R0.mx.example.com'), moved);
    // A name that merely starts with ours is somebody else's message.
    await fsp.writeFile(path.join(maildir, 'cur', 'Q1AB2C3.R0.mx.example.com.other:2,'), 'x');
    const again = await deliverToMaildir(delivery(maildir));
    assert.deepEqual(again, { kind: 'delivered', path: moved, duplicate: true });
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'new')), []);
  });
});

test('exactly once: another recipient index of the same message is a different file', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    const r0 = await deliverToMaildir(delivery(maildir, { uniqueName: maildirUniqueName('Q1', 0, 'mx') }));
    const r1 = await deliverToMaildir(
      delivery(maildir, { uniqueName: maildirUniqueName('Q1', 1, 'mx'), body: chunks(BODY) }),
    );
    assert.deepEqual(
      [r0.kind, r1.kind, (await fsp.readdir(path.join(maildir, 'new'))).sort()],
      ['delivered', 'delivered', ['Q1.R0.mx', 'Q1.R1.mx']],
    );
  });
});

/** A body that records whether it was read and whether it was closed. */
function spyBody(): { body: AsyncIterable<Buffer>; log: string[] } {
  const log: string[] = [];
  let sent = false;
  const iterator: AsyncIterator<Buffer> = {
    next: () => {
      log.push('next');
      const done = sent;
      sent = true;
      return Promise.resolve(
        done ? { done: true, value: undefined } : { done: false, value: Buffer.from(BODY) },
      );
    },
    return: () => {
      log.push('return');
      return Promise.resolve({ done: true, value: undefined });
    },
  };
  return { body: { [Symbol.asyncIterator]: () => iterator }, log };
}

test('the body is closed, not read, when delivery ends before writing (duplicate, error, bad name)', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    const first = spyBody();
    assert.equal((await deliverToMaildir(delivery(maildir, { body: first.body }))).kind, 'delivered');
    assert.deepEqual(first.log, ['next', 'next']);
    const duplicate = spyBody();
    assert.equal((await deliverToMaildir(delivery(maildir, { body: duplicate.body }))).kind, 'delivered');
    assert.deepEqual(duplicate.log, ['return']);
    const badName = spyBody();
    assert.equal(
      (await deliverToMaildir(delivery(maildir, { uniqueName: 'a/b', body: badName.body }))).kind,
      'failed',
    );
    assert.deepEqual(badName.log, ['return']);
    const denied = spyBody();
    const fs: MaildirSyncFs = {
      ...NODE_MAILDIR_FS,
      openSync: () => {
        throw errno('EACCES');
      },
    };
    const result = await deliverToMaildir(delivery(maildir, { uniqueName: 'other', body: denied.body }), {
      fs,
    });
    assert.equal(result.kind, 'deferred');
    assert.deepEqual(denied.log, ['return']);
  });
});

test('checkExisting=false skips the look-up; rename still leaves a single file in new/', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    await deliverToMaildir(delivery(maildir));
    const result = await deliverToMaildir(delivery(maildir, { body: chunks('Second\r\n') }), {
      checkExisting: false,
    });
    const file = path.join(maildir, 'new', 'Q1AB2C3.R0.mx.example.com');
    assert.deepEqual(result, { kind: 'delivered', path: file, duplicate: false });
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'new')), ['Q1AB2C3.R0.mx.example.com']);
    assert.equal(await fsp.readFile(file, 'utf8'), PREPEND + 'Second\r\n');
  });
});

test('a batch of deliveries into one Maildir shares one fsync of new/, and every message is there', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    const newDir = path.join(maildir, 'new');
    const n = 20;
    const events: string[] = [];
    const fs: MaildirSyncFs = {
      ...NODE_MAILDIR_FS,
      renameSync: (from: string, to: string) => {
        nodeFs.renameSync(from, to);
        events.push('rename');
      },
      openSync: (file: string, flags: string, mode?: number) => {
        const fd = nodeFs.openSync(file, flags, mode);
        if (file === newDir) events.push('open new/');
        return fd;
      },
    };
    const writer = new MaildirWriter(fs);
    const batch: WriterRequest[] = Array.from({ length: n }, (_, i) => ({
      kind: 'begin',
      id: i,
      job: { maildir, uniqueName: `Q1.R${i}.mx`, checkExisting: false, ownership: DEFAULT_OWNERSHIP },
      data: Buffer.from(`${PREPEND}Message ${i}\r\n`),
      end: true,
    }));
    const replies = await writer.run(batch);
    assert.equal(replies.length, n);
    for (const r of replies)
      assert.deepEqual(r.result, {
        kind: 'delivered',
        path: path.join(newDir, `Q1.R${r.id}.mx`),
        duplicate: false,
      });
    // Every rename, then the one fsync of new/ that covers them all.
    assert.deepEqual(events, [...Array.from({ length: n }, () => 'rename'), 'open new/']);
    assert.equal(writer.dirSyncs, 1);
    for (let i = 0; i < n; i++)
      assert.equal(
        await fsp.readFile(path.join(newDir, `Q1.R${i}.mx`), 'utf8'),
        `${PREPEND}Message ${i}\r\n`,
      );
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'tmp')), []);
  });
});

test('concurrent deliveries through a writer thread arrive in batches: fewer fsyncs of new/ than deliveries', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    const writer = new MaildirWriterThreads({ threads: 1 });
    try {
      await deliverToMaildir(delivery(maildir, { uniqueName: 'Q0.R0.mx' }), { writer }); // creates the Maildir
      const before = writer.dirSyncs;
      const n = 20;
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          deliverToMaildir(
            delivery(maildir, { uniqueName: `Q1.R${i}.mx`, body: chunks(`Message ${i}\r\n`) }),
            {
              writer,
              checkExisting: false,
            },
          ),
        ),
      );
      for (const r of results) assert.equal(r.kind, 'delivered', JSON.stringify(r));
      // The requests posted while the thread was busy make up its next batch.
      const syncs = writer.dirSyncs - before;
      assert.ok(syncs >= 1 && syncs <= n / 2, `${syncs} fsyncs of new/ for ${n} deliveries`);
      for (let i = 0; i < n; i++)
        assert.equal(
          await fsp.readFile(path.join(maildir, 'new', `Q1.R${i}.mx`), 'utf8'),
          `${PREPEND}Message ${i}\r\n`,
        );
    } finally {
      await writer.close();
    }
  });
});

test('a writer thread that stops defers what it held; the next delivery starts a new thread', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    const writer = new MaildirWriterThreads({ threads: 1 });
    try {
      let stop: () => void = () => undefined;
      const stopped = new Promise<void>((resolve) => (stop = resolve));
      async function* slow(): AsyncGenerator<Buffer> {
        yield Buffer.alloc(300 * 1024, 'a'); // more than one request: the file stays open in the thread
        stop();
        await new Promise((resolve) => setTimeout(resolve, 50));
        yield Buffer.from('end\r\n');
      }
      const pending = deliverToMaildir(delivery(maildir, { body: slow() }), { writer, checkExisting: false });
      await stopped;
      await writer.close();
      const result = await pending;
      assert.equal(result.kind, 'deferred', JSON.stringify(result));
      assert.match(result.kind === 'deferred' ? result.reason : '', /^the Maildir writer thread stopped \(/);
      assert.deepEqual(await fsp.readdir(path.join(maildir, 'new')), []);
      const again = await deliverToMaildir(delivery(maildir), { writer });
      assert.equal(again.kind, 'delivered', JSON.stringify(again));
      assert.equal(writer.threadIds.length, 1);
    } finally {
      await writer.close();
    }
  });
});

test('a tmp/ file left by a crashed attempt is truncated and replaced', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    for (const sub of ['tmp', 'new', 'cur']) await fsp.mkdir(path.join(maildir, sub), { recursive: true });
    await fsp.writeFile(path.join(maildir, 'tmp', 'Q1AB2C3.R0.mx.example.com'), 'x'.repeat(10_000));
    const result = await deliverToMaildir(delivery(maildir));
    assert.equal(result.kind, 'delivered');
    assert.equal(
      await fsp.readFile(path.join(maildir, 'new', 'Q1AB2C3.R0.mx.example.com'), 'utf8'),
      PREPEND + BODY,
    );
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'tmp')), []);
  });
});

test('a large body (5 MiB in 64 KiB chunks) streams through, byte for byte', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    const chunkSize = 64 * 1024;
    const count = 80; // 5 MiB
    let inFlight = 0;
    let maxInFlight = 0;
    async function* big(): AsyncGenerator<Buffer> {
      for (let i = 0; i < count; i++) {
        await Promise.resolve();
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        yield Buffer.alloc(chunkSize, 0x41 + (i % 26));
        inFlight--;
      }
    }
    const result = await deliverToMaildir(delivery(maildir, { body: big() }));
    assert.equal(result.kind, 'delivered');
    const data = await fsp.readFile(path.join(maildir, 'new', 'Q1AB2C3.R0.mx.example.com'));
    assert.equal(data.length, Buffer.byteLength(PREPEND) + count * chunkSize);
    assert.equal(data.subarray(0, Buffer.byteLength(PREPEND)).toString(), PREPEND);
    for (let i = 0; i < count; i++) {
      const offset = Buffer.byteLength(PREPEND) + i * chunkSize;
      assert.equal(data[offset], 0x41 + (i % 26));
      assert.equal(data[offset + chunkSize - 1], 0x41 + (i % 26));
    }
    // The next chunk is asked for only after the previous one is written: one chunk at a time.
    assert.equal(maxInFlight, 1);
  });
});

test(
  'permission denied on new/ (real chmod 0500) -> deferred naming the path; tmp file removed',
  { skip: isRoot && 'root ignores chmod; the injected EACCES test covers this' },
  async () => {
    await withTempDir(async (root) => {
      const maildir = path.join(root, 'bob');
      for (const sub of ['tmp', 'new', 'cur'])
        await fsp.mkdir(path.join(maildir, sub), { recursive: true, mode: 0o700 });
      await fsp.chmod(path.join(maildir, 'new'), 0o500);
      const result = await deliverToMaildir(delivery(maildir));
      await fsp.chmod(path.join(maildir, 'new'), 0o700);
      assert.deepEqual(result, {
        kind: 'deferred',
        reason: `cannot move the message into ${path.join(maildir, 'new')}: permission denied (EACCES): check the owner and mode of the Maildir`,
      });
      assert.deepEqual(await fsp.readdir(path.join(maildir, 'tmp')), []);
    });
  },
);

test('permission denied (EACCES injected, works as root) -> deferred naming the path; tmp file removed', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    let renameCalls = 0;
    const fs: MaildirSyncFs = {
      ...NODE_MAILDIR_FS,
      renameSync: () => {
        renameCalls++;
        throw errno('EACCES');
      },
    };
    const result = await deliverToMaildir(delivery(maildir), { fs });
    assert.equal(renameCalls, 1);
    assert.deepEqual(result, {
      kind: 'deferred',
      reason: `cannot move the message into ${path.join(maildir, 'new')}: permission denied (EACCES): check the owner and mode of the Maildir`,
    });
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'tmp')), []);
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'new')), []);
  });
});

test('each transient errno while writing tmp/ -> deferred with what to fix', async () => {
  const advice: Record<string, string> = {
    EACCES: 'permission denied (EACCES): check the owner and mode of the Maildir',
    EPERM: 'operation not permitted (EPERM): check the owner, mode and attributes (lsattr) of the Maildir',
    ENOSPC: 'no space left on device (ENOSPC): free space on the file system that holds the Maildir',
    EDQUOT: "disk quota exceeded (EDQUOT): raise the mailbox owner's quota or free space",
    EIO: 'input/output error (EIO): check the disk and the kernel log',
    EROFS: 'read-only file system (EROFS): remount the file system that holds the Maildir read-write',
  };
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    const tmpFile = path.join(maildir, 'tmp', 'Q1AB2C3.R0.mx.example.com');
    for (const [code, text] of Object.entries(advice)) {
      const fs: MaildirSyncFs = {
        ...NODE_MAILDIR_FS,
        openSync: (file: string, flags: string, mode?: number) => {
          if (file === tmpFile) throw errno(code);
          return nodeFs.openSync(file, flags, mode);
        },
      };
      const result = await deliverToMaildir(delivery(maildir), { fs });
      assert.deepEqual(result, { kind: 'deferred', reason: `cannot write ${tmpFile}: ${text}` });
    }
  });
});

test('a write error in the middle of the body -> deferred, partial tmp file removed, body source closed', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    const tmpFile = path.join(maildir, 'tmp', 'Q1AB2C3.R0.mx.example.com');
    let closed = false;
    async function* body(): AsyncGenerator<Buffer> {
      try {
        // 640 KiB: written in several gathered writes, the second of which fails.
        for (let i = 0; i < 10; i++) yield Buffer.alloc(64 * 1024, `line ${i}\r\n`);
        await Promise.resolve();
      } finally {
        closed = true;
      }
    }
    let writes = 0;
    const fs: MaildirSyncFs = {
      ...NODE_MAILDIR_FS,
      writeSync: (fd: number, data: Uint8Array, offset: number, length: number) => {
        writes++;
        if (writes === 2) throw errno('ENOSPC');
        return nodeFs.writeSync(fd, data, offset, length);
      },
    };
    const result = await deliverToMaildir(delivery(maildir, { body: body() }), { fs });
    assert.deepEqual(result, {
      kind: 'deferred',
      reason: `cannot write ${tmpFile}: no space left on device (ENOSPC): free space on the file system that holds the Maildir`,
    });
    assert.equal(closed, true);
    assert.equal(writes, 2);
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'tmp')), []);
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'new')), []);
  });
});

test('a body source that fails -> deferred (spool problem), tmp file removed', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    async function* body(): AsyncGenerator<Buffer> {
      yield Buffer.from('part\r\n');
      await Promise.resolve();
      throw new Error('spool file truncated');
    }
    const result = await deliverToMaildir(delivery(maildir, { body: body() }));
    assert.deepEqual(result, {
      kind: 'deferred',
      reason: 'cannot read the message body from the spool: spool file truncated',
    });
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'tmp')), []);
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'new')), []);
  });
});

test('new/ exists as a regular file -> failed naming it (also as root); tmp file removed', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    await fsp.mkdir(path.join(maildir, 'tmp'), { recursive: true });
    await fsp.mkdir(path.join(maildir, 'cur'));
    await fsp.writeFile(path.join(maildir, 'new'), 'not a directory');
    const newFile = path.join(maildir, 'new', 'Q1AB2C3.R0.mx.example.com');
    assert.deepEqual(await deliverToMaildir(delivery(maildir)), {
      kind: 'failed',
      reason: `cannot look for an earlier delivery in ${newFile}: ${path.join(maildir, 'new')} exists but is not a directory (ENOTDIR): the mailbox path is unusable`,
    });
    assert.deepEqual(
      await deliverToMaildir(delivery(maildir, { body: chunks(BODY) }), { checkExisting: false }),
      {
        kind: 'failed',
        reason: `cannot move the message into ${path.join(maildir, 'new')}: ${path.join(maildir, 'new')} exists but is not a directory (ENOTDIR): the mailbox path is unusable`,
      },
    );
    assert.deepEqual(await fsp.readdir(path.join(maildir, 'tmp')), []);
  });
});

test('a Maildir path under a regular file -> failed naming the file', async () => {
  await withTempDir(async (root) => {
    await fsp.writeFile(path.join(root, 'example.com'), 'oops');
    const maildir = path.join(root, 'example.com', 'bob');
    const result = await deliverToMaildir(delivery(maildir), { checkExisting: false });
    assert.deepEqual(result, {
      kind: 'failed',
      reason: `cannot write ${path.join(maildir, 'tmp', 'Q1AB2C3.R0.mx.example.com')}: ${path.join(root, 'example.com')} exists but is not a directory (ENOTDIR): the mailbox path is unusable`,
    });
  });
});

test('the Maildir path itself is a regular file -> failed', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    await fsp.writeFile(maildir, 'oops');
    const result = await deliverToMaildir(delivery(maildir));
    assert.equal(result.kind, 'failed');
    assert.match(
      result.kind === 'failed' ? result.reason : '',
      new RegExp(`${maildir} exists but is not a directory`),
    );
  });
});

test('invalid unique names -> failed before touching the disk', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    const cases: [string, string][] = [
      ['', 'it is empty'],
      ['../escape', "it starts with '.'"],
      ['a/b', "use printable ASCII without '/' or ':'"],
      ['a:2,S', "use printable ASCII without '/' or ':'"],
      ['a b', "use printable ASCII without '/' or ':'"],
      ['x'.repeat(201), 'it is longer than 200 bytes'],
    ];
    for (const [name, why] of cases) {
      assert.deepEqual(await deliverToMaildir(delivery(maildir, { uniqueName: name })), {
        kind: 'failed',
        reason: `invalid Maildir file name ${JSON.stringify(name)}: ${why}`,
      });
    }
    await assert.rejects(fsp.stat(maildir), { code: 'ENOENT' });
  });
});

test('maildirUniqueName: <qid>.R<index>.<host>, with / and : in the host written \\057 and \\072', () => {
  assert.equal(maildirUniqueName('0001JX7K2M', 3, 'mx.example.com'), '0001JX7K2M.R3.mx.example.com');
  assert.equal(maildirUniqueName('Q', 0, 'a/b:c'), 'Q.R0.a\\057b\\072c');
});

test('maildirPathFor: <root>/<domain lower-cased>/<local part as given>', () => {
  assert.equal(
    maildirPathFor('/var/mail', { local: 'Bob.Smith', domain: 'Example.COM' }),
    '/var/mail/example.com/Bob.Smith',
  );
  assert.equal(
    maildirPathFor('/var/mail', { local: 'a+tag=x_y-z', domain: 'example.com' }),
    '/var/mail/example.com/a+tag=x_y-z',
  );
});

test('maildirPathFor: odd local parts are made safe and stay distinct', () => {
  const at = (local: string): string => maildirPathFor('/m', { local, domain: 'example.com' });
  assert.equal(at('../../etc'), '/m/example.com/%2E.%2F..%2Fetc');
  assert.equal(at('.'), '/m/example.com/%2E');
  assert.equal(at('..'), '/m/example.com/%2E.');
  assert.equal(at('.hidden'), '/m/example.com/%2Ehidden');
  assert.equal(at('"john doe"'), '/m/example.com/%22john%20doe%22');
  assert.equal(at('a/b'), '/m/example.com/a%2Fb');
  assert.equal(at('a%2Fb'), '/m/example.com/a%252Fb');
  assert.equal(at('x:y\0z'), '/m/example.com/x%3Ay%00z');
  assert.equal(at('josé'), '/m/example.com/jos%C3%A9');
  assert.equal(maildirPathFor('/m', { local: 'bob', domain: '../x' }), '/m/%2E.%2Fx/bob');
  assert.throws(() => at(''), { name: 'RangeError', message: 'empty local part: no Maildir for it' });
  assert.throws(() => maildirPathFor('/m', { local: 'bob', domain: '' }), { name: 'RangeError' });
  assert.throws(() => at('\u00ff'.repeat(64)), {
    name: 'RangeError',
    message: 'local part too long for a file name: 384 bytes encoded',
  });
});

test('delivery to an odd local part stays inside the root', async () => {
  await withTempDir(async (root) => {
    const maildir = maildirPathFor(root, { local: '../../escape', domain: 'Example.com' });
    const result = await deliverToMaildir(delivery(maildir));
    assert.equal(result.kind, 'delivered');
    assert.deepEqual(await fsp.readdir(root), ['example.com']);
    assert.deepEqual(await fsp.readdir(path.join(root, 'example.com')), ['%2E.%2F..%2Fescape']);
  });
});

test('RFC 5321 4.4: deliveryHeaders gives Return-Path then Delivered-To, CRLF-terminated', () => {
  assert.equal(
    deliveryHeaders({ sender: 'alice@example.org', recipient: 'bob@example.com' }),
    'Return-Path: <alice@example.org>\r\nDelivered-To: bob@example.com\r\n',
  );
  assert.equal(
    deliveryHeaders({ sender: '', recipient: 'bob@example.com' }),
    'Return-Path: <>\r\nDelivered-To: bob@example.com\r\n',
  );
  assert.throws(() => deliveryHeaders({ sender: 'a@b\r\nX-Evil: 1', recipient: 'bob@example.com' }), {
    name: 'RangeError',
  });
});

test('a small message in many pieces is written with one system call, prepend first', async () => {
  await withTempDir(async (root) => {
    const maildir = path.join(root, 'bob');
    const pieces = Array.from({ length: 12 }, (_, i) => Buffer.from(`line ${i}\r\n`));
    async function* body(): AsyncGenerator<Buffer> {
      await Promise.resolve();
      yield* pieces;
    }
    let writes = 0;
    const fs: MaildirSyncFs = {
      ...NODE_MAILDIR_FS,
      writeSync: (fd: number, data: Uint8Array, offset: number, length: number) => {
        writes++;
        return nodeFs.writeSync(fd, data, offset, length);
      },
    };
    const result = await deliverToMaildir(delivery(maildir, { body: body() }), { fs });
    assert.equal(result.kind, 'delivered');
    assert.equal(writes, 1);
    const file = path.join(maildir, 'new', 'Q1AB2C3.R0.mx.example.com');
    assert.equal(await fsp.readFile(file, 'latin1'), PREPEND + Buffer.concat(pieces).toString('latin1'));
  });
});
