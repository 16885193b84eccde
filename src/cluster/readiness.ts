/**
 * /readyz with workers (docs/workers.md, docs/operations.md "Health and draining"): the server
 * is ready only if every running worker is. Worker 0's admin listener asks the primary, the
 * primary asks every worker that is running (each checks its own listeners and spool directory,
 * admin/health.ts), and the answer is the first worker, by index, that is not ready, named in the
 * detail; a worker that does not answer in time counts as not ready (its event loop is stuck, so
 * the connections it holds and the ones the kernel gives it wait too). A worker that is
 * restarting is left out: the others take its connections meanwhile (accept-gate.ts).
 * Trust: internal; the answers come from Sterna's own workers, and are checked for shape.
 */
import { parseReadyState, type ReadyState } from '../admin/health.js';

/** How long the primary waits for each worker's answer. */
export const WORKER_READY_ANSWER_MS = 2000;
/** How long worker 0 waits for the primary's (which waits for the workers). */
export const PRIMARY_READY_ANSWER_MS = WORKER_READY_ANSWER_MS + 1000;

/** A worker as the primary sees it: running (ask) or not (null). */
export interface ReadinessSource {
  index: number;
  /** Asks the running worker for its readiness within `timeoutMs`; null: not running now. */
  ask: ((timeoutMs: number) => Promise<unknown>) | null;
}

/** Every running worker's readiness, in one answer (the primary). */
export async function clusterReadiness(workers: readonly ReadinessSource[]): Promise<ReadyState> {
  const running = workers.filter((w) => w.ask !== null);
  if (running.length === 0) return { ready: false, reason: 'starting', detail: 'no worker is running yet' };
  const answers = await Promise.all(
    running.map(async (w): Promise<ReadyState> => {
      try {
        return parseReadyState(await w.ask?.(WORKER_READY_ANSWER_MS));
      } catch (err) {
        return notAnswering(`worker ${w.index}`, WORKER_READY_ANSWER_MS, err);
      }
    }),
  );
  for (const [i, state] of answers.entries()) {
    if (state.ready) continue;
    const index = running[i]?.index ?? i;
    const detail = state.detail ?? 'not ready';
    return {
      ready: false,
      ...(state.reason !== undefined ? { reason: state.reason } : {}),
      detail: detail.startsWith(`worker ${index} `) ? detail : `worker ${index}: ${detail}`,
    };
  }
  return { ready: true };
}

/** Worker 0's side: the primary's answer, or not ready if it gives none in time. */
export async function readinessFromPrimary(
  ask: (timeoutMs: number) => Promise<unknown>,
): Promise<ReadyState> {
  try {
    return parseReadyState(await ask(PRIMARY_READY_ANSWER_MS));
  } catch (err) {
    return notAnswering('the primary process', PRIMARY_READY_ANSWER_MS, err);
  }
}

function notAnswering(who: string, ms: number, err: unknown): ReadyState {
  const why = err instanceof Error ? err.message : String(err);
  return {
    ready: false,
    reason: 'worker-not-answering',
    detail: `${who} did not answer within ${ms} ms (${why}): its event loop may be blocked; its log lines say more`,
  };
}
