/**
 * How many workers to run ([server] workers): the configured count, or when the key is absent one
 * per core this process may use (os.availableParallelism()). On 2 cores, two workers beat one by
 * 14-50 % with 20 sessions at once, and the accept gate (accept-gate.ts) keeps a lone session on
 * one worker, where two spread over idle processes were 10-28 % slower (docs/workers.md, "How many
 * workers").
 * Trust: internal.
 */
import { availableParallelism } from 'node:os';
import type { Config } from '../config/schema.js';

export function workerCount(config: Config): number {
  return config.server.workers ?? defaultWorkers(availableParallelism());
}

/** The default for `cores` cores: one worker each, at least one. */
export function defaultWorkers(cores: number): number {
  return Math.max(1, cores);
}
