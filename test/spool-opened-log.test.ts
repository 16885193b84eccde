/**
 * Start-up reports what the spool's recovery found in ONE "spool opened" line per spool, with
 * the whole report (operations.md: messages, truncatedBytes, corrupt as a list), not two lines
 * of which one gives only a count of the damages.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { startTestServer } from './helpers/server.js';

test('start-up logs one "spool opened" line, with the recovery report', async () => {
  const lines: string[] = [];
  const capture = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString('utf8'));
      done();
    },
  });
  const server = await startTestServer({ log: pino({ level: 'debug' }, capture) });
  try {
    const opened = lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((rec) => rec['msg'] === 'spool opened');
    assert.equal(opened.length, 1, JSON.stringify(opened));
    const [rec] = opened;
    assert.equal(rec?.['messages'], 0);
    assert.equal(rec?.['truncatedBytes'], 0);
    assert.deepEqual(rec?.['corrupt'], []);
    assert.equal(typeof rec?.['spool'], 'string');
  } finally {
    await server.stop({ remove: true });
  }
});
