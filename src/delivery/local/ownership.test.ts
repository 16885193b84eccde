import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { maildirOwnership } from './ownership.js';

const BASE = { maildir_root: '', postmaster: '', concurrency: 20, threads: 1, retry_ms: 1000 };

test('maildir ownership: names from passwd and group files, numbers as given, empty unchanged, octal modes', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-ownership-'));
  try {
    const files = { passwd: path.join(dir, 'passwd'), group: path.join(dir, 'group') };
    await writeFile(
      files.passwd,
      'root:x:0:0::/root:/bin/sh\nvmail:x:5000:5001::/var/vmail:/usr/sbin/nologin\n',
    );
    await writeFile(files.group, 'root:x:0:\nmail:x:8:\nvmail:x:5001:\n');
    const own = (owner: string, group: string, dir_mode = '0700', file_mode = '0600') =>
      maildirOwnership({ ...BASE, owner, group, dir_mode, file_mode }, files);
    assert.deepEqual(own('vmail', 'mail', '0750', '640'), {
      uid: 5000,
      gid: 8,
      dirMode: 0o750,
      fileMode: 0o640,
    });
    assert.deepEqual(own('', ''), { uid: -1, gid: -1, dirMode: 0o700, fileMode: 0o600 });
    assert.deepEqual(own('123', '456'), { uid: 123, gid: 456, dirMode: 0o700, fileMode: 0o600 });
    assert.throws(
      () => own('nobody-here', ''),
      /^Error: local_delivery\.owner: no such name in .*passwd: "nobody-here"$/,
    );
    assert.throws(() => own('', 'vmail2'), /^Error: local_delivery\.group: no such name/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
