import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Router } from '../delivery/router.js';
import { silentLogger } from '../observability/log.js';
import { buildAliasTable } from '../policy/aliases.js';
import { QueueManager } from './manager.js';
import { Spool } from './spool.js';
import { makeEnvelope, withTempDir } from './testdata/spool-fixtures.js';

test('a committed message is delivered after the commit returns to its session, not inside it', async () => {
  await withTempDir(async (dir) => {
    const { spool } = await Spool.open({ dir, segmentBytes: 4 * 1024 * 1024, fsync: false });
    const router = new Router({
      localDomains: new Set(),
      discardDomains: new Set(['discard.test']),
      lmtpDomains: new Set(),
      postmaster: 'postmaster@example.org',
      isMailbox: () => false,
      aliases: () => buildAliasTable({}),
    });
    const manager = new QueueManager({
      spool,
      router,
      log: silentLogger(),
      hostname: 'mx.example.org',
      maildirRoot: dir,
      maxActive: 10,
      localConcurrency: 1,
      retryMs: 60_000,
    });
    manager.start();
    const w = spool.begin();
    await w.write(Buffer.from('Subject: x\r\n\r\nx\r\n'));
    await w.commit(makeEnvelope(['a@discard.test'], Date.now()));
    // The session's code runs here, where it writes its 250: no delivery pass has started, so
    // none of its work sits between the fsync and the reply.
    assert.equal(manager.isActive(w.qid), false);
    assert.equal(spool.size, 1);
    // whenIdle() counts the message waiting for its pass.
    await manager.whenIdle();
    assert.equal(spool.size, 0, 'delivered (discarded) once the session went on');
    await manager.stop();
    await spool.close();
  });
});
