/**
 * The DKIM key store: the signing keys of [[dkim.keys]], each a private key in a file of its
 * own, and what a DNS administrator publishes for each (RFC 6376 3.6.1 key records; RFC 8463 3
 * for ed25519, whose p= is the raw 32-octet public key).
 *
 * Rotation is by state, one per key: "publish" (the record is in DNS, the key does not sign
 * yet), "active" (it signs), "retired" (it no longer signs; its record stays published until
 * mail signed with it has been delivered). A domain has at most one active key per algorithm, so
 * with an RSA and an ed25519 key both active a message carries two signatures (dual signing).
 *
 * Loading is strict (DESIGN rule 6, fail closed): a key file that is missing, that others can
 * read or write (mode wider than 0600), that does not parse, or whose type is not the configured
 * algorithm, stops start-up as a configuration error naming the key. Key generation writes the
 * file with mode 0600 and never overwrites one.
 * Trust level: the key files are the operator's and secret; their contents are never logged.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdir, open, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, type ConfigProblem } from '../config/load.js';
import type { Config } from '../config/schema.js';

export type DkimAlgorithm = 'rsa' | 'ed25519';
export type DkimKeyState = 'publish' | 'active' | 'retired';

export interface DkimKey {
  domain: string;
  selector: string;
  algorithm: DkimAlgorithm;
  state: DkimKeyState;
  file: string;
  /** The TOML path of the key's table, e.g. "dkim.keys[0]". */
  configKey: string;
  privateKey: KeyObject;
  /** The private key as PKCS#8 PEM, as mailauth's signer takes it. */
  pem: string;
  /** The value of the key's TXT record: "v=DKIM1; k=...; p=...". */
  record: string;
}

/** Shortest RSA key Sterna signs with (RFC 8301 3.2: signers MUST use at least 1024 bits). */
const MIN_RSA_BITS = 1024;

/** The directory keys live in: [dkim] key_dir, or data_dir/dkim. */
export function keyDir(config: Config): string {
  return config.dkim.key_dir === '' ? path.join(config.data_dir, 'dkim') : path.resolve(config.dkim.key_dir);
}

/** Where a key's file is when key_file is not given. */
export function defaultKeyFile(config: Config, domain: string, selector: string): string {
  return path.join(keyDir(config), `${domain.toLowerCase()}.${selector}.key`);
}

/** The DNS name of a key's record (RFC 6376 3.6.2.1). */
export function recordName(domain: string, selector: string): string {
  return `${selector}._domainkey.${domain.toLowerCase()}`;
}

/** The TXT record value for a public key: RFC 6376 3.6.1 (rsa: SPKI DER), RFC 8463 4.2 (ed25519: raw key). */
export function recordValue(publicKey: KeyObject, algorithm: DkimAlgorithm): string {
  switch (algorithm) {
    case 'rsa':
      return `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;
    case 'ed25519': {
      // The SPKI DER of an ed25519 key is a fixed 12-octet prefix and the 32-octet key.
      const der = publicKey.export({ type: 'spki', format: 'der' });
      return `v=DKIM1; k=ed25519; p=${der.subarray(der.length - 32).toString('base64')}`;
    }
    default: {
      const never: never = algorithm;
      throw new Error(`unhandled algorithm ${String(never)}`);
    }
  }
}

/**
 * The record as a zone file line: the value split into character-strings of at most 255
 * octets (RFC 1035 3.3.14; a 2048-bit RSA key does not fit in one), which receivers join
 * with nothing between (RFC 6376 3.6.2.2).
 */
export function zoneLine(domain: string, selector: string, value: string): string {
  const parts: string[] = [];
  for (let at = 0; at < value.length; at += 255) parts.push(`"${value.slice(at, at + 255)}"`);
  const name = `${recordName(domain, selector)}.`;
  if (parts.length === 1) return `${name} IN TXT ${parts[0] ?? '""'}`;
  return `${name} IN TXT ( ${parts.join('\n    ')} )`;
}

/** A new key pair: the private key as PKCS#8 PEM, and its record value. */
export function generateKey(algorithm: DkimAlgorithm): { pem: string; record: string } {
  const pair =
    algorithm === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ed25519');
  return {
    pem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    record: recordValue(pair.publicKey, algorithm),
  };
}

/** Writes a new key file, mode 0600 (its directory 0700 when created); never replaces a file. */
export async function writeKeyFile(file: string, pem: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const fh = await open(file, 'wx', 0o600);
  try {
    await fh.writeFile(pem);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Reads and checks one key file; a problem in plain words, or the key. */
async function readKey(
  file: string,
  algorithm: DkimAlgorithm,
  label: string,
): Promise<{ key: KeyObject } | { problem: string }> {
  let mode: number;
  try {
    mode = (await stat(file)).mode;
  } catch (err) {
    return {
      problem: isMissing(err)
        ? `${label}: the key file ${file} does not exist; create it with "sterna dkim keygen" or set key_file`
        : `${label}: cannot read the key file ${file}: ${errorText(err)}`,
    };
  }
  if ((mode & 0o077) !== 0) {
    const octal = (mode & 0o777).toString(8).padStart(4, '0');
    return {
      problem: `${label}: the key file ${file} has mode ${octal}, open to other users; a private key must be mode 0600 (chmod 600 ${file})`,
    };
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(await readFile(file));
  } catch (err) {
    return {
      problem: `${label}: the key file ${file} does not hold a private key in PEM form (${errorText(err)})`,
    };
  }
  const type = key.asymmetricKeyType;
  if (type !== algorithm) {
    return { problem: `${label}: the key file ${file} holds a ${type ?? 'unknown'} key, not ${algorithm}` };
  }
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (algorithm === 'rsa' && bits !== undefined && bits < MIN_RSA_BITS) {
    return {
      problem: `${label}: the RSA key in ${file} has ${bits} bits; receivers refuse keys under ${MIN_RSA_BITS} (RFC 8301 3.2): make a new one with "sterna dkim keygen"`,
    };
  }
  return { key };
}

function isMissing(err: unknown): boolean {
  return err instanceof Error && 'code' in err && err.code === 'ENOENT';
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class DkimKeyStore {
  readonly keys: readonly DkimKey[];
  /** Active keys by signing domain (lower case). */
  readonly #active = new Map<string, DkimKey[]>();

  private constructor(keys: DkimKey[]) {
    this.keys = keys;
    for (const k of keys) {
      if (k.state !== 'active') continue;
      const list = this.#active.get(k.domain) ?? [];
      list.push(k);
      this.#active.set(k.domain, list);
    }
  }

  static empty(): DkimKeyStore {
    return new DkimKeyStore([]);
  }

  /**
   * Loads every configured key. Throws ConfigError listing every problem: a key file missing,
   * open to others, unparseable or of the wrong type; two keys with one selector in a domain;
   * two active keys of one algorithm in a domain.
   */
  static async load(config: Config, source = 'the configuration'): Promise<DkimKeyStore> {
    const problems: ConfigProblem[] = [];
    const keys: DkimKey[] = [];
    const seen = new Map<string, string>();
    const activeSeen = new Map<string, string>();
    for (const [i, k] of config.dkim.keys.entries()) {
      const configKey = `dkim.keys[${i}]`;
      const domain = k.domain.toLowerCase();
      const label = `${configKey} (${domain}, selector ${k.selector})`;
      const id = `${domain} ${k.selector}`;
      const dup = seen.get(id);
      if (dup !== undefined) {
        problems.push({
          key: `${configKey}.selector`,
          message: `${configKey}.selector: ${dup} already uses selector "${k.selector}" for ${domain}; each key needs its own selector`,
        });
        continue;
      }
      seen.set(id, configKey);
      if (k.state === 'active') {
        const slot = `${domain} ${k.algorithm}`;
        const other = activeSeen.get(slot);
        if (other !== undefined) {
          problems.push({
            key: `${configKey}.state`,
            message: `${configKey}.state: ${other} is already the active ${k.algorithm} key of ${domain}; a domain signs with one key per algorithm (set the old one to "retired")`,
          });
          continue;
        }
        activeSeen.set(slot, configKey);
      }
      const file = k.key_file === '' ? defaultKeyFile(config, domain, k.selector) : path.resolve(k.key_file);
      const read = await readKey(file, k.algorithm, label);
      if ('problem' in read) {
        problems.push({ key: `${configKey}.key_file`, message: read.problem });
        continue;
      }
      keys.push({
        domain,
        selector: k.selector,
        algorithm: k.algorithm,
        state: k.state,
        file,
        configKey,
        privateKey: read.key,
        pem: read.key.export({ type: 'pkcs8', format: 'pem' }).toString(),
        record: recordValue(createPublicKey(read.key), k.algorithm),
      });
    }
    if (problems.length > 0) throw new ConfigError(source, problems);
    return new DkimKeyStore(keys);
  }

  get hasActiveKeys(): boolean {
    return this.#active.size > 0;
  }

  /**
   * The active keys that sign mail from `domain`: those of the domain itself, else of its
   * nearest parent that has active keys (a signature by a parent domain aligns under DMARC's
   * relaxed alignment, RFC 7489 3.1.1). Empty when no key applies.
   */
  keysFor(domain: string): readonly DkimKey[] {
    const labels = domain.toLowerCase().replace(/\.$/, '').split('.');
    for (let i = 0; i < labels.length - 1; i++) {
      const found = this.#active.get(labels.slice(i).join('.'));
      if (found !== undefined) return found;
    }
    return [];
  }
}
