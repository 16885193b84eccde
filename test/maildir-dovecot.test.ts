/**
 * Sterna's own Maildir deliveries read by a real Dovecot running as its mail user ("dovecot"):
 * Dovecot refuses a Maildir its mail user does not own, so [local_delivery] owner and group give
 * the directories and files Sterna creates to that user (test/helpers/dovecot.ts, curl's IMAP).
 */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { maildirOwnership } from '../src/delivery/local/ownership.js';
import { after, before, test } from 'node:test';
import { requireDovecot, startDovecot, waitImap, type DovecotInstance } from './helpers/dovecot.js';
import { sendMessage, waitGone } from './helpers/outbound.js';
import { freePort } from './helpers/process.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { requireTool } from './helpers/tools.js';

const BOB = { name: 'bob@sterna.test', password: 'bob imap pass' };

const skip = requireDovecot().skip !== false || requireTool('curl').skip !== false;

let dv: DovecotInstance;
let imapPort: number;
let server: TestServer;
let root: string;
let parent: string;

before(async () => {
  if (skip) return;
  imapPort = await freePort();
  // Sterna creates the root itself, so it gets the owner too; its parent only lets Dovecot through.
  parent = await mkdtemp(path.join(tmpdir(), 'sterna-vmail-'));
  await chmod(parent, 0o711);
  root = path.join(parent, 'vmail');
  dv = await startDovecot({ users: [BOB], mailboxes: { imapPort, mailLocation: `maildir:${root}/%d/%n` } });
  server = await startTestServer({
    users: [{ address: BOB.name, password: 'smtp pass' }],
    toml: `[local_delivery]
maildir_root = "${root}"
owner = "dovecot"
group = "dovecot"
dir_mode = "0750"
file_mode = "0640"
`,
  });
});

after(async () => {
  await server?.stop({ remove: true });
  await dv?.cleanup();
  if (parent !== undefined) await rm(parent, { recursive: true, force: true });
});

test("a Dovecot running as its mail user reads Sterna's Maildir delivery over IMAP", { skip }, async () => {
  const sent = 'From: <x@client.test>\r\nTo: <bob@sterna.test>\r\nSubject: owned\r\n\r\nRead by Dovecot.\r\n';
  const qid = await sendMessage(server.ports.smtp, { from: 'x@client.test', to: [BOB.name], body: sent });
  await waitGone(server, qid);
  // Dovecot answers [SERVERBUG] for a Maildir its mail user does not own.
  const fetched = (await waitImap(imapPort, BOB, 1)).toString('latin1');
  assert.ok(fetched.endsWith(sent), fetched);
  assert.match(fetched, /^Return-Path: <x@client\.test>\r\nDelivered-To: bob@sterna\.test\r\n/);
  const maildir = path.join(root, 'sterna.test', 'bob');
  const { uid, gid } = maildirOwnership({
    ...server.config.local_delivery,
    owner: 'dovecot',
    group: 'dovecot',
  });
  for (const dir of [root, path.join(root, 'sterna.test'), maildir, path.join(maildir, 'new')]) {
    const st = await stat(dir);
    assert.equal(st.mode & 0o777, 0o750, dir);
    assert.deepEqual([st.uid, st.gid], [uid, gid], dir);
  }
  // The message file: Dovecot may have moved it from new/ to cur/ when it was read.
  const files = [
    ...(await readdir(path.join(maildir, 'new'))).map((f) => path.join(maildir, 'new', f)),
    ...(await readdir(path.join(maildir, 'cur'))).map((f) => path.join(maildir, 'cur', f)),
  ].filter((f) => path.basename(f).startsWith(qid));
  assert.equal(files.length, 1, files.join(', '));
  const st = await stat(files[0] ?? '');
  assert.equal(st.mode & 0o777, 0o640);
  assert.deepEqual([st.uid, st.gid], [uid, gid]);
});
