/**
 * Chooses the state store from [state]: Redis when `redis` is set (shared by every node that
 * names the same server), otherwise the in-process store saved under data_dir/state/.
 * Trust: internal.
 */
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/log.js';
import { MemoryStore } from './memory.js';
import { RedisStore } from './redis.js';
import type { StateStore } from './store.js';

/** Where the in-process store keeps its file. */
export function stateFilePath(dataDir: string): string {
  return join(dataDir, 'state', 'state.json');
}

export async function openStateStore(config: Config, log: Logger, now?: () => number): Promise<StateStore> {
  const s = config.state;
  const store =
    s.redis !== ''
      ? new RedisStore({
          url: s.redis,
          prefix: s.redis_prefix,
          timeoutMs: s.timeout_ms,
          ...(now !== undefined ? { now } : {}),
        })
      : await MemoryStore.open({
          file: stateFilePath(config.data_dir),
          fsync: config.spool.fsync,
          log,
          ...(now !== undefined ? { now } : {}),
        });
  log.info({ store: store.description }, 'policy state store opened');
  return store;
}
