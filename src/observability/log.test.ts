/**
 * The logger (log.ts): JSON lines with an ISO time, secrets replaced by "<redacted>" at the top
 * level and one level down, and lines written out by flush() even below the write buffer size.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createLogger, redactSecrets } from './log.js';

test('secrets are redacted at the top level and one level down; other lines are not copied', () => {
  const plain = { qid: 'Q1', rcpt: 'a@example.org', nested: { size: 3 } };
  assert.equal(redactSecrets(plain), plain);
  assert.deepEqual(redactSecrets({ user: 'u', password: 'hunter2' }), { user: 'u', password: '<redacted>' });
  assert.deepEqual(redactSecrets({ auth: { credentials: 'AGEAcA==', mechanism: 'PLAIN' }, secret: 's' }), {
    auth: { credentials: '<redacted>', mechanism: 'PLAIN' },
    secret: '<redacted>',
  });
});

test('a log line reaches the file with its time, and without the secrets it was given', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sterna-log-'));
  try {
    const file = join(dir, 'sterna.log');
    const log = createLogger({ level: 'info', format: 'json', destination: file });
    log.info({ qid: 'Q1', password: 'hunter2', auth: { secret: 'x' } }, 'queued');
    log.debug({ qid: 'Q2' }, 'not at info');
    await new Promise<void>((resolve, reject) => log.flush((err) => (err ? reject(err) : resolve())));
    const lines = (await readFile(file, 'utf8')).trim().split('\n');
    assert.equal(lines.length, 1);
    const line: unknown = JSON.parse(lines[0] ?? '');
    assert.ok(isRecord(line));
    assert.match(String(line['time']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.deepEqual(
      { ...line, time: 'T' },
      {
        level: 30,
        time: 'T',
        app: 'sterna',
        qid: 'Q1',
        password: '<redacted>',
        auth: { secret: '<redacted>' },
        msg: 'queued',
      },
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
