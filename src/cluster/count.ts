/**
 * How many workers to run ([server] workers): the configured count, or the cores this process
 * may use (os.availableParallelism()) when the key is absent.
 * Trust: internal.
 */
import { availableParallelism } from 'node:os';
import type { Config } from '../config/schema.js';

export function workerCount(config: Config): number {
  return config.server.workers ?? availableParallelism();
}
