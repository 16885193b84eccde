/**
 * Extra IPv6 addresses on the loopback interface, for tests that need several client addresses
 * in one /64, or in different ones (loopback IPv6 has only ::1 of its own). Added with
 * `ip -6 addr replace ADDR/128 dev lo nodad` and removed again by `remove()`; use documentation
 * addresses (2001:db8::/32, RFC 3849), distinct per test file.
 * Needs root and iproute2: without them the test is skipped loudly, or fails under CI=true
 * (.ci/run runs as root). Trust: test code only; runs `ip` with arguments it builds, no shell.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';

const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'];

function ipCommand(): string | undefined {
  return IP.find((f) => {
    try {
      accessSync(f, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** A skip reason for node:test, or false; throws under CI=true when addresses cannot be added. */
export function requireLoopbackIpv6(): { skip: string | false } {
  let reason: string | undefined;
  if (process.getuid?.() !== 0) reason = 'adding IPv6 addresses to lo needs root';
  else if (ipCommand() === undefined) reason = 'the ip command (iproute2) is not installed';
  if (reason === undefined) return { skip: false };
  if (process.env['CI'] === 'true') throw new Error(`test cannot run: ${reason}; .ci/run must provide it`);
  process.stderr.write(`\n*** test skipped: ${reason} ***\n\n`);
  return { skip: reason };
}

function ip(args: string[]): Promise<void> {
  const cmd = ipCommand() ?? 'ip';
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 10_000 }, (err, _stdout, stderr) => {
      if (err === null) resolve();
      else reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
    });
  });
}

/**
 * Adds `addresses` to lo (an address left by an earlier, killed run is simply replaced) and
 * resolves with the function that removes them all.
 */
export async function addLoopbackIpv6(addresses: readonly string[]): Promise<{ remove(): Promise<void> }> {
  const added: string[] = [];
  const remove = async (): Promise<void> => {
    const errors: unknown[] = [];
    for (const a of added.splice(0))
      await ip(['-6', 'addr', 'del', `${a}/128`, 'dev', 'lo']).catch((e: unknown) => errors.push(e));
    if (errors.length > 0) throw new AggregateError(errors, 'could not remove every test address from lo');
  };
  try {
    for (const a of addresses) {
      await ip(['-6', 'addr', 'replace', `${a}/128`, 'dev', 'lo', 'nodad']);
      added.push(a);
    }
  } catch (err) {
    await remove().catch(() => undefined);
    throw err;
  }
  return { remove };
}
