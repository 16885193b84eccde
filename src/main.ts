/**
 * Wiring only: start Sterna from a validated config, print what it listens on, handle
 * signals (SIGHUP reload, SIGTERM/SIGINT clean shutdown), resolve with the exit code.
 */
import type { Config } from './config/schema.js';
import { createLogger } from './observability/log.js';
import { startSterna } from './server/app.js';

export async function serve(config: Config): Promise<number> {
  const log = createLogger({ level: config.log.level, format: config.log.format });
  let running;
  try {
    running = await startSterna(config, log);
  } catch (err) {
    log.fatal({ err }, 'cannot start');
    log.flush();
    return 1;
  }
  for (const a of running.addresses)
    log.info({ listener: a.listener, address: a.address, port: a.port }, 'listening');
  const smtp = running.addresses.find((a) => a.listener === 'smtp');
  if (smtp !== undefined) {
    const host = smtp.address.includes(':') ? `[${smtp.address}]` : smtp.address;
    log.info(
      `try it: swaks --server ${host}:${smtp.port} --to postmaster@${config.hostname} --from you@example.org`,
    );
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    /** Set while SIGTERM drains; a second SIGTERM (or SIGINT) stops at once. */
    let draining = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'shutting down');
      running
        .close()
        .then(() => {
          log.info('stopped');
          log.flush();
          resolve(0);
        })
        .catch((err: unknown) => {
          log.error({ err }, 'error during shutdown');
          resolve(1);
        });
    };
    // SIGTERM drains first (docs/operations.md): open transactions finish, new sessions get 421 4.3.2.
    process.on('SIGTERM', () => {
      if (draining || stopping) return stop('SIGTERM');
      draining = true;
      void running.drain().then(() => stop('SIGTERM'));
    });
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      log.info('SIGHUP: reloading certificates and aliases');
      void running.reload();
    });
  });
}
