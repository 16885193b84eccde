import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadSrsSecrets } from './srs-secret.js';

test('processes starting at once make one secret file, and each reads it whole', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-srs-'));
  try {
    // A cluster's workers each load the secrets at start; the first start makes the file. The
    // window between one making it and another reading it is short: try it many times.
    for (let round = 0; round < 30; round++) {
      const file = path.join(dir, `r${round}`, 'srs', 'secret');
      const loaded = await Promise.all(Array.from({ length: 32 }, () => loadSrsSecrets(file)));
      const first = loaded[0]?.[0]?.toString('utf8');
      assert.ok(first !== undefined && first.length >= 40, 'a 32-octet secret in base64');
      for (const secrets of loaded)
        assert.deepEqual(
          secrets.map((s) => s.toString('utf8')),
          [first],
        );
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      assert.equal((await stat(path.dirname(file))).mode & 0o777, 0o700);
      assert.deepEqual(await readdir(path.dirname(file)), ['secret'], 'no temporary file left');
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the secret file never exists without its secret: another process could read it empty', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-srs-'));
  try {
    const file = path.join(dir, 'srs', 'secret');
    let done = false;
    const loading = loadSrsSecrets(file).finally(() => {
      done = true;
    });
    // The file system calls run on libuv's pool while this thread looks, synchronously, at what
    // another process would find between them.
    const seen = new Set<number>();
    for (let step = 0; step < 500 && !done; step++) {
      const until = Date.now() + 5;
      while (Date.now() < until) {
        try {
          seen.add(statSync(file).size);
        } catch {
          seen.add(-1); // not there yet
        }
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    await loading;
    assert.ok(!seen.has(0), `sizes seen: ${[...seen].join(', ')}`);
    assert.ok(seen.has(-1), 'looked before the file was made');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
