/**
 * The bodies of messages just committed, kept in memory until their delivery reads them: the
 * writer had every byte in hand, and reading them back went through the thread pool twice (the
 * COMMIT for the chunk list, then each CHUNK) for each delivery of a small message. Only small
 * bodies are kept (at most MAX_BODY_BYTES each, MAX_TOTAL_BYTES and MAX_BODIES in all); a full cache takes no new
 * entries rather than evicting, for the reason the COMMIT cache gives (spool-read-cache.ts): with
 * a backlog, deliveries read messages in about the order they arrived, so evicting the oldest
 * would drop each entry just before its use. An entry goes when its message finishes.
 *
 * The bytes are those the COMMIT's durable records hold (the same buffers the writer queued), so
 * a reader sees exactly what a read from disk would give. A restart starts with an empty cache
 * and reads from disk, as before.
 * Trust level: internal; the bodies are untrusted bytes, kept and returned unchanged.
 */

/** Bodies larger than this are read from disk. */
export const MAX_BODY_BYTES = 256 * 1024;
/** All kept bodies together. */
const MAX_TOTAL_BYTES = 16 * 1024 * 1024;
/**
 * At most this many bodies: a small part may share an 8 KiB allocation pool with others and keep
 * it alive, so the byte count alone would understate what the cache holds.
 */
const MAX_BODIES = 4096;

export class RecentBodies {
  readonly #bodies = new Map<string, readonly Buffer[]>();
  #bytes = 0;

  /** Keeps `parts` (the whole body, in order, `size` bytes) for `qid`, if there is room. */
  remember(qid: string, parts: readonly Buffer[], size: number): void {
    if (size > MAX_BODY_BYTES || this.#bytes + size > MAX_TOTAL_BYTES || this.#bodies.size >= MAX_BODIES)
      return;
    if (this.#bodies.has(qid)) return;
    // One buffer: a reader gets the body in one piece (one write into a Maildir), and the small
    // pieces the session wrote are not kept alive.
    this.#bodies.set(qid, parts.length === 1 ? parts : [Buffer.concat(parts, size)]);
    this.#bytes += size;
  }

  /** The kept body of `qid`, or undefined when it must be read from disk. */
  get(qid: string): readonly Buffer[] | undefined {
    return this.#bodies.get(qid);
  }

  /** The message finished (or the spool closes): its body is not needed again. */
  forget(qid: string): void {
    const parts = this.#bodies.get(qid);
    if (parts === undefined) return;
    this.#bodies.delete(qid);
    for (const p of parts) this.#bytes -= p.length;
  }

  clear(): void {
    this.#bodies.clear();
    this.#bytes = 0;
  }

  get bytes(): number {
    return this.#bytes;
  }
}
