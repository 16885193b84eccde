/**
 * Which spool segments are still needed: every live message, message being received and body
 * being read holds ("pins") the oldest segment it reads, and a segment at or after the oldest
 * pinned one must not be deleted (docs/spool.md, "Deleting segments and compaction").
 * Trust level: internal bookkeeping; no I/O.
 */

/** Counts holders per segment: a segment at or after the smallest held one must not be deleted. */
export class Pins {
  readonly #counts = new Map<number, number>();

  add(segment: number): void {
    this.#counts.set(segment, (this.#counts.get(segment) ?? 0) + 1);
  }

  remove(segment: number): void {
    const n = (this.#counts.get(segment) ?? 0) - 1;
    if (n > 0) this.#counts.set(segment, n);
    else this.#counts.delete(segment);
  }

  /** The oldest pinned segment, Infinity when none. */
  min(): number {
    let m = Infinity;
    for (const s of this.#counts.keys()) if (s < m) m = s;
    return m;
  }
}
