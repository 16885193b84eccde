/**
 * Independent DKIM verifiers for the signing tests (test/dkim-*.test.ts): dkimpy (Debian
 * python3-dkim, its library with the key records handed in instead of DNS) and opendkim's
 * offline mode (`opendkim -t` with TestDNSData, Debian opendkim). Each checks every
 * DKIM-Signature field of the octets a receiving server got. Test code only.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describeRun, runTool } from './tools.js';

/** One signature as a verifier saw it. */
export interface VerifiedSignature {
  d: string;
  s: string;
  a: string;
  /** The h= tag, as written. */
  h: string;
  ok: boolean;
}

/** Key records by DNS name (without the final dot): "s1._domainkey.example.org" → "v=DKIM1; …". */
export type KeyRecords = Record<string, string>;

const DKIMPY = `
import sys, json, dkim
from dkim.util import parse_tag_value
recs = json.loads(sys.argv[1])
m = sys.stdin.buffer.read()
headers, _ = dkim.rfc822_parse(m)
sigs = [v for k, v in headers if k.lower() == b'dkim-signature']
d = dkim.DKIM(m)
def dnsfunc(name, timeout=5):
    v = recs.get(name.decode().rstrip('.'))
    return v.encode() if v is not None else None
out = []
for i, sig in enumerate(sigs):
    tags = parse_tag_value(sig)
    try:
        ok = bool(d.verify(idx=i, dnsfunc=dnsfunc))
    except Exception:
        ok = False
    out.append({k: tags[k.encode()].decode() for k in ('d', 's', 'a', 'h')} | {'ok': ok})
print(json.dumps(out))
`;

/** Every signature of `message`, verified by dkimpy. */
export async function verifyWithDkimpy(message: Buffer, records: KeyRecords): Promise<VerifiedSignature[]> {
  const run = await runTool('python3', ['-c', DKIMPY, JSON.stringify(records)], { input: message });
  assert.equal(run.code, 0, describeRun(run));
  return JSON.parse(run.stdout) as VerifiedSignature[];
}

/**
 * Every signature of `message`, verified by `opendkim -t` (its TestDNSData holds the records):
 * the results of the Authentication-Results field it would add, as "pass rsa-sha256 d s".
 */
export async function verifyWithOpendkim(
  message: Buffer,
  records: KeyRecords,
  dir: string,
  name: string,
): Promise<string[]> {
  const dns = path.join(dir, `${name}.dns`);
  const conf = path.join(dir, `${name}.conf`);
  const file = path.join(dir, `${name}.eml`);
  await writeFile(
    dns,
    Object.entries(records)
      .map(([n, v]) => `${n} ${v}\n`)
      .join(''),
  );
  await writeFile(conf, `Mode v\nSyslog no\nTestDNSData file:${dns}\nMinimumKeyBits 1024\n`);
  await writeFile(file, message);
  const run = await runTool('opendkim', ['-x', conf, '-vvv', '-t', file]);
  assert.equal(run.code, 0, describeRun(run));
  const results = [
    ...(run.stdout + run.stderr).matchAll(
      /dkim=(\w+)(?: \([^)]*\))? header\.d=(\S+) header\.i=\S+ header\.a=(\S+) header\.s=(\S+)/g,
    ),
  ].map((m) => `${m[1]} ${m[3]} ${m[2]} ${m[4]}`);
  assert.ok(results.length > 0, describeRun(run));
  return results.sort();
}
