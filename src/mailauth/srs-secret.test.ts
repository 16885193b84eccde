import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadSrsSecrets } from './srs-secret.js';

test('a first start makes one secret, mode 0600 in a 0700 directory, and leaves no temporary file', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-srs-'));
  try {
    const file = path.join(dir, 'srs', 'secret');
    const [secret] = await loadSrsSecrets(file);
    assert.ok(secret !== undefined && secret.length >= 40, 'a 32-octet secret in base64');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(path.dirname(file))).mode & 0o777, 0o700);
    assert.deepEqual(await readdir(path.dirname(file)), ['secret'], 'no temporary file left');
    assert.deepEqual(await loadSrsSecrets(file), [secret], 'a later start reads the same secret');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('two starts at once: the file is never seen empty or replaced, and both get the same secret', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-srs-'));
  try {
    const file = path.join(dir, 'srs', 'secret');
    let done = false;
    // A cluster's workers each load the secrets at start, and the first start makes the file.
    const loading = Promise.all([loadSrsSecrets(file), loadSrsSecrets(file)]).finally(() => {
      done = true;
    });
    // The file system calls run on libuv's pool while this thread looks, synchronously, at what
    // another process would find between them.
    const seen = new Set<string>();
    let missing = false;
    for (let step = 0; step < 500 && !done; step++) {
      const until = Date.now() + 5;
      while (Date.now() < until) {
        try {
          seen.add(readFileSync(file, 'utf8'));
        } catch {
          missing = true; // not there yet
        }
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    const [a, b] = await loading;
    assert.ok(missing, 'looked before the file was made');
    assert.ok(!seen.has(''), 'never seen empty');
    assert.ok(seen.size <= 1, `never replaced: ${seen.size} different contents seen`);
    assert.deepEqual(a, b, 'both starts use the same secret');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
