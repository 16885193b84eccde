import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SpoolError, toSpoolError } from './spool-errors.js';

function errno(code: string): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(`${code}: simulated`);
  e.code = code;
  return e;
}

test('ENOSPC and EDQUOT map to ENOSPC (the session replies 452 4.3.1)', () => {
  for (const code of ['ENOSPC', 'EDQUOT']) {
    const e = toSpoolError(errno(code), 'writing');
    assert.ok(e instanceof SpoolError);
    assert.equal(e.code, 'ENOSPC');
    assert.equal(e.message, `writing: no space left for the spool (${code}: simulated)`);
  }
});

test('other errors map to EIO (the session replies 451 4.3.0)', () => {
  for (const err of [errno('EIO'), errno('EROFS'), errno('EACCES'), new Error('odd'), 'a string']) {
    assert.equal(toSpoolError(err).code, 'EIO');
  }
});

test('a SpoolError passes through unchanged', () => {
  const e = new SpoolError('NOT_FOUND', 'gone');
  assert.equal(toSpoolError(e), e);
  assert.equal(e.name, 'SpoolError');
});
