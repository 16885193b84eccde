/**
 * The SRS secret file ([forwarding] srs_secret_file, default data_dir/srs/secret): one secret a
 * line; the first makes new addresses, every line is accepted for bounces, so a secret is
 * rotated by adding a new first line and removing the old one once its addresses expired
 * (srs_max_age_days). Made at the first start that needs it: 32 random octets in base64, mode
 * 0600, in a directory of mode 0700, never over an existing file. Loading is strict, as for
 * DKIM keys (DESIGN rule 6): a file that others can read or write, or that holds no secret,
 * stops start-up as a configuration error.
 * Trust level: the file is the operator's secret; its contents are never logged.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';

/** Shortest secret accepted, in octets of the line as written. */
const MIN_SECRET_OCTETS = 16;

/** Where the secret file is: [forwarding] srs_secret_file, or data_dir/srs/secret. */
export function srsSecretFile(config: Config): string {
  const f = config.forwarding.srs_secret_file;
  return f === '' ? path.join(config.data_dir, 'srs', 'secret') : path.resolve(f);
}

/** Reads the secrets; makes the file first when it does not exist. Throws ConfigError. */
export async function loadSrsSecrets(file: string, source = 'the configuration'): Promise<Buffer[]> {
  const key = 'forwarding.srs_secret_file';
  const problem = (message: string): ConfigError =>
    new ConfigError(source, [{ key, message: `${key}: ${message}` }]);
  let mode: number;
  try {
    mode = (await stat(file)).mode;
  } catch (err) {
    if (!(err instanceof Error && 'code' in err && err.code === 'ENOENT'))
      throw problem(`cannot read the SRS secret file ${file}: ${errorText(err)}`);
    await createSecretFile(file);
    mode = 0o600;
  }
  if ((mode & 0o077) !== 0) {
    const octal = (mode & 0o777).toString(8).padStart(4, '0');
    throw problem(
      `the SRS secret file ${file} has mode ${octal}, open to other users; it must be mode 0600 (chmod 600 ${file})`,
    );
  }
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw problem(`cannot read the SRS secret file ${file}: ${errorText(err)}`);
  }
  const secrets = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (secrets.length === 0 || secrets.some((s) => Buffer.byteLength(s) < MIN_SECRET_OCTETS)) {
    throw problem(
      `the SRS secret file ${file} must hold one secret a line, each at least ${MIN_SECRET_OCTETS} characters (remove the file to have a new one made)`,
    );
  }
  return secrets.map((s) => Buffer.from(s, 'utf8'));
}

/**
 * Writes the new secret whole under a temporary name, then links it to its own, which fails if
 * the file exists: another process starting at the same moment (a cluster's workers) sees no file
 * or the whole secret, never an empty one, and the first one made is the one every process keeps.
 */
async function createSecretFile(file: string): Promise<void> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(`${randomBytes(32).toString('base64')}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, file);
  } catch (err) {
    if (!(err instanceof Error && 'code' in err && err.code === 'EEXIST')) throw err; // else made meanwhile
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  // The secret's name must survive a crash: addresses made with it come back in bounces.
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
