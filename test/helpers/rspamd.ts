/**
 * A private rspamd for the content filter tests (Debian's rspamd): Debian's rules
 * (/etc/rspamd/common.conf) with our own top-level file, one normal worker on a free loopback
 * port, its database, run and log directories in a temporary directory, DNS pointed at a port
 * where nothing answers (no query leaves the machine), a five-name TLD list (compiling the real
 * one takes half a minute) and the test patterns on (rspamd's GTUBE variants for "add header"
 * and "rewrite subject"). Runs in the foreground (-f) as root with -i, stopped by its pid.
 * Trust: test code only; binds 127.0.0.1.
 */
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runDaemon, type Daemon } from './filters.js';
import { freePort } from './process.js';
import { findTool } from './tools.js';

export const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';
/** rspamd's test pattern for the action "rewrite subject" (needs enable_test_patterns). */
export const GTUBE_REWRITE_SUBJECT = `Z${GTUBE.slice(1)}`;
/** rspamd's test pattern for the action "add header". */
export const GTUBE_ADD_HEADER = `Y${GTUBE.slice(1)}`;

/** What the private rspamd says with its "soft reject" (a Subject starting "please defer"). */
export const RSPAMD_SOFT_MESSAGE = 'Try again later, said rspamd';

/**
 * spamStatus: rspamd's milter_headers module adds `X-Spam-Status: No, score=…` to every message,
 * local and authenticated senders' too (its defaults skip those), so a clean message carries the
 * filter's field.
 */
export async function startRspamd(opts: { spamStatus?: boolean } = {}): Promise<Daemon> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-rspamd-'));
  for (const sub of ['db', 'run', 'log', 'local']) await mkdir(path.join(dir, sub));
  const port = await freePort();
  await writeFile(path.join(dir, 'tld.dat'), 'com\nnet\norg\nexample\ntest\n');
  if (opts.spamStatus === true) {
    await mkdir(path.join(dir, 'local', 'local.d'), { recursive: true });
    await writeFile(
      path.join(dir, 'local', 'local.d', 'milter_headers.conf'),
      'use = ["x-spam-status"];\nskip_local = false;\nskip_authenticated = false;\n',
    );
  }
  // Two rules of our own, so that the tests can ask for the actions "soft reject" and
  // "greylist" by the Subject (multimap sets a symbol, force_actions turns it into the action).
  await mkdir(path.join(dir, 'local', 'local.d'), { recursive: true });
  await writeFile(path.join(dir, 'soft.map'), '/^please defer/\n');
  await writeFile(path.join(dir, 'grey.map'), '/^please greylist/\n');
  await writeFile(
    path.join(dir, 'local', 'local.d', 'multimap.conf'),
    `STERNA_TEST_SOFT { type = "header"; header = "Subject"; regexp = true; map = "${path.join(dir, 'soft.map')}"; score = 0.0; }
STERNA_TEST_GREY { type = "header"; header = "Subject"; regexp = true; map = "${path.join(dir, 'grey.map')}"; score = 0.0; }
`,
  );
  await writeFile(
    path.join(dir, 'local', 'local.d', 'force_actions.conf'),
    `rules {
  STERNA_SOFT { action = "soft reject"; expression = "STERNA_TEST_SOFT"; message = "${RSPAMD_SOFT_MESSAGE}"; }
  STERNA_GREY { action = "greylist"; expression = "STERNA_TEST_GREY"; }
}
`,
  );
  const conf = path.join(dir, 'rspamd.conf');
  await writeFile(
    conf,
    `# A private rspamd for Sterna's tests.
.include "$CONFDIR/common.conf"
options {
  pidfile = "$RUNDIR/rspamd.pid";
  .include "$CONFDIR/options.inc"
  enable_test_patterns = true;
  url_tld = "${path.join(dir, 'tld.dat')}";
  dns { nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }
}
logging {
  type = "file";
  filename = "$LOGDIR/rspamd.log";
  level = "info";
}
worker "normal" {
  bind_socket = "127.0.0.1:${port}";
  count = 1;
  .include "$CONFDIR/worker-normal.inc"
}
`,
  );
  const v = (k: string, sub: string): string => `--var=${k}=${path.join(dir, sub)}`;
  return runDaemon({
    command: findTool('rspamd') ?? 'rspamd',
    // -i: run as root without dropping to a user (the test's temporary directory is root's).
    args: [
      '-f',
      '-i',
      '-c',
      conf,
      v('DBDIR', 'db'),
      v('RUNDIR', 'run'),
      v('LOGDIR', 'log'),
      v('LOCAL_CONFDIR', 'local'),
    ],
    dir,
    port,
    // Loading Debian's rules takes seconds alone, minutes on a machine shared by busy tests.
    startTimeoutMs: 240_000,
  });
}
