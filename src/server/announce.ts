/**
 * The start-up lines an operator reads first: each bound listener ("listening"), and a swaks
 * command to try the smtp one. Logged by main.ts (one process) and by worker 0 of a cluster.
 * Trust: internal.
 */
import type { Logger } from '../observability/log.js';
import type { BoundAddress } from './listeners.js';

export function announceListeners(log: Logger, hostname: string, addresses: readonly BoundAddress[]): void {
  for (const a of addresses)
    log.info({ listener: a.listener, address: a.address, port: a.port }, 'listening');
  const smtp = addresses.find((a) => a.listener === 'smtp');
  if (smtp !== undefined) {
    const host = smtp.address.includes(':') ? `[${smtp.address}]` : smtp.address;
    log.info(
      `try it: swaks --server ${host}:${smtp.port} --to postmaster@${hostname} --from you@example.org`,
    );
  }
}
