/**
 * ARC chain verification (RFC 8617) of a message as a receiver got it, for the forwarding
 * tests: by dkimpy (Debian python3-dkim, the library behind `arcverify`, with the key records
 * handed in instead of DNS) and by mailauth (its arc() after dkimVerify(), with a resolver over
 * the same records). Test code only.
 */
import assert from 'node:assert/strict';
import { arc, dkimVerify } from 'mailauth';
import type { KeyRecords } from './dkim-verify.js';
import { describeRun, runTool } from './tools.js';

const DKIMPY_ARC = `
import sys, json, dkim
recs = json.loads(sys.argv[1])
m = sys.stdin.buffer.read()
def dnsfunc(name, timeout=5):
    v = recs.get(name.decode().rstrip('.'))
    return v.encode() if v is not None else None
cv, results, comment = dkim.arc_verify(m, dnsfunc=dnsfunc)
print(json.dumps({'cv': cv.decode() if cv else None, 'comment': comment, 'sets': len(results)}))
`;

/** dkimpy's verdict on the chain: cv "pass", "fail", "none" (or null for a chain it calls ended). */
export async function arcVerifyWithDkimpy(
  message: Buffer,
  records: KeyRecords,
): Promise<{ cv: string | null; comment: string; sets: number }> {
  const run = await runTool('python3', ['-c', DKIMPY_ARC, JSON.stringify(records)], { input: message });
  assert.equal(run.code, 0, describeRun(run));
  return JSON.parse(run.stdout) as { cv: string | null; comment: string; sets: number };
}

/** mailauth's verdict on the chain: "pass", "fail" or "none", and the newest instance. */
export async function arcVerifyWithMailauth(
  message: Buffer,
  records: KeyRecords,
): Promise<{ result: string; i: number | false }> {
  const resolver = (name: string, type: string): Promise<string[][]> => {
    const v = records[name.replace(/\.$/, '')];
    if (type === 'TXT' && v !== undefined) return Promise.resolve([[v]]);
    return Promise.reject(Object.assign(new Error(`no ${type} record for ${name}`), { code: 'ENOTFOUND' }));
  };
  const verified = await dkimVerify(message, { resolver });
  assert.ok(verified.arc !== undefined && verified.arc.chain !== false, 'the message has an ARC chain');
  const result = await arc(
    {
      chain: verified.arc.chain,
      ...(verified.arc.lastEntry !== undefined ? { lastEntry: verified.arc.lastEntry } : {}),
      ...(verified.arc.error !== undefined ? { error: verified.arc.error } : {}),
    },
    { resolver },
  );
  return { result: result.status.result, i: result.i };
}
