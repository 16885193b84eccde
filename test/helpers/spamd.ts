/**
 * A private spamd (Debian's spamd + spamassassin) for the content filter tests: SpamAssassin's
 * packaged rules (-C /usr/share/spamassassin), a site configuration of our own in a temporary
 * directory (--siteconfigpath: Debian's .pre plugin lists, no Bayes, no network tests, and one
 * test rule, STERNA_TEST_JUNK, that scores a chosen body word between the junk and reject
 * thresholds), local tests only (-L), on a free loopback port, in the foreground, as nobody
 * (spamd refuses to run its children as root), stopped by its pid.
 * Trust: test code only; binds 127.0.0.1.
 */
import { chmod, copyFile, mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './process.js';
import { runDaemon, type Daemon } from './filters.js';
import { findTool } from './tools.js';

/** A body word the private spamd scores 8 (between junk_score 5 and reject_score 15 by default). */
export const SPAMD_JUNK_WORD = 'sterna-junk-test-pattern';

export async function startSpamd(): Promise<Daemon> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-spamd-'));
  const site = path.join(dir, 'site');
  // spamd's children run as nobody and read the site configuration then.
  await chmod(dir, 0o755);
  await mkdir(site, { mode: 0o755 });
  // The plugin lists (v320.pre loads the Check plugin, without which nothing is scanned).
  for (const name of await readdir('/etc/spamassassin'))
    if (name.endsWith('.pre')) await copyFile(path.join('/etc/spamassassin', name), path.join(site, name));
  await writeFile(
    path.join(site, 'local.cf'),
    `required_score 5.0
report_safe 0
use_bayes 0
bayes_auto_learn 0
skip_rbl_checks 1
body STERNA_TEST_JUNK /${SPAMD_JUNK_WORD}/
describe STERNA_TEST_JUNK Sterna's test word for the Junk threshold
score STERNA_TEST_JUNK 8.0
`,
  );
  const port = await freePort();
  return runDaemon({
    command: findTool('spamd') ?? '/usr/sbin/spamd',
    args: [
      '-L',
      '-x',
      '-u',
      'nobody',
      '-C',
      '/usr/share/spamassassin',
      `--siteconfigpath=${site}`,
      '-i',
      '127.0.0.1',
      '-A',
      '127.0.0.1',
      '-p',
      String(port),
      '--pidfile',
      path.join(dir, 'spamd.pid'),
      '-s',
      'stderr',
      '-m',
      '2',
    ],
    dir,
    port,
  });
}
