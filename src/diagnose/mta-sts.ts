/**
 * The domain's MTA-STS record at _mta-sts.DOMAIN (RFC 8461 3.1): one record, "v=STSv1" first,
 * an id= of 1 to 32 letters and digits. The policy it announces
 * (https://mta-sts.DOMAIN/.well-known/mta-sts.txt, RFC 8461 3.2) is not fetched: the finding
 * says so. MTA-STS is optional; a domain without it gets a warning, not an error. Trust: the
 * record is untrusted DNS data, quoted as text.
 */
import type { DomainContext } from './context.js';
import { finding, type Finding } from './finding.js';
import { parseTagList, recordsOfVersion, tagValue, txtStrings } from './txt-records.js';

export async function checkMtaSts(ctx: DomainContext): Promise<Finding[]> {
  const name = `_mta-sts.${ctx.domain}`;
  const policyUrl = `https://mta-sts.${ctx.domain}/.well-known/mta-sts.txt`;
  const id = ctx.now.toISOString().replace(/[-:]/g, '').slice(0, 15);
  const publish = `publish: ${name}. IN TXT "v=STSv1; id=${id}" and serve the policy at ${policyUrl} ("version: STSv1", "mode: enforce", "mx: ${ctx.hostname}", "max_age: 604800")`;
  const txt = txtStrings(await ctx.dns.txt(name));
  if (!Array.isArray(txt)) {
    return [
      finding(
        'mta-sts',
        'warning',
        'mta-sts.unknown',
        name,
        `could not check: ${txt.failed}`,
        'check [dns] servers and try again',
      ),
    ];
  }
  const records = recordsOfVersion(txt, /^v=STSv1\s*(;|$)/);
  if (records.length === 0) {
    return [
      finding(
        'mta-sts',
        'warning',
        'mta-sts.missing',
        name,
        `${ctx.domain} publishes no MTA-STS record (optional): servers sending to it cannot insist on TLS with a valid certificate, so an attacker on the path can read the mail`,
        publish,
      ),
    ];
  }
  if (records.length > 1) {
    return [
      finding(
        'mta-sts',
        'error',
        'mta-sts.multiple',
        name,
        `${records.length} MTA-STS records at ${name}: RFC 8461 3.1 tells senders to ignore MTA-STS then`,
        'keep one record',
      ),
    ];
  }
  const record = records[0] ?? '';
  const tags = parseTagList(record);
  const recordId = tags === null ? undefined : tagValue(tags, 'id');
  if (recordId === undefined || !/^[A-Za-z0-9]{1,32}$/.test(recordId)) {
    return [
      finding(
        'mta-sts',
        'error',
        'mta-sts.syntax',
        name,
        `the MTA-STS record "${record}" needs an id= of 1 to 32 letters and digits (RFC 8461 3.1); senders ignore it`,
        publish,
      ),
    ];
  }
  return [
    finding(
      'mta-sts',
      'ok',
      'mta-sts.ok',
      name,
      `MTA-STS record id=${recordId}; the policy at ${policyUrl} is not fetched by this check (curl it to see it)`,
    ),
  ];
}
