/**
 * The set of held messages (`sterna queue hold`): queue ids the queue manager must not deliver
 * until they are released. Kept apart from the spool's log as a small JSON file, `held.json`
 * in the spool directory, replaced atomically (write a temporary file, fsync, rename, fsync
 * the directory), so a hold survives a crash and a restart. Ids of messages no longer in the
 * spool are dropped when the set is loaded. Without a directory the set lives in memory only.
 * Trust level: internal; the file is written by Sterna itself and checked when read.
 */
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDir } from './spool-log.js';

export const HELD_FILE = 'held.json';

export class HeldSet {
  readonly #dir: string | null;
  readonly #fsync: boolean;
  readonly #ids: Set<string>;
  #chain: Promise<unknown> = Promise.resolve();

  private constructor(dir: string | null, fsync: boolean, ids: Set<string>) {
    this.#dir = dir;
    this.#fsync = fsync;
    this.#ids = ids;
  }

  /** A set kept in memory only (tests, and a manager built without a spool directory). */
  static memory(): HeldSet {
    return new HeldSet(null, false, new Set());
  }

  /**
   * Loads the set from `dir`/held.json (a missing file is an empty set), keeping only the ids
   * for which `live` answers true.
   */
  static async load(dir: string, opts: { fsync: boolean; live: (qid: string) => boolean }): Promise<HeldSet> {
    let ids: string[] = [];
    try {
      const parsed: unknown = JSON.parse(await readFile(join(dir, HELD_FILE), 'utf8'));
      if (Array.isArray(parsed)) ids = parsed.filter((x): x is string => typeof x === 'string');
    } catch (err) {
      if (!(typeof err === 'object' && err !== null && 'code' in err && err.code === 'ENOENT')) throw err;
    }
    const set = new HeldSet(dir, opts.fsync, new Set(ids.filter((id) => opts.live(id))));
    if (set.#ids.size !== ids.length) await set.#save();
    return set;
  }

  has(qid: string): boolean {
    return this.#ids.has(qid);
  }

  get ids(): string[] {
    return [...this.#ids].sort();
  }

  /** Holds qid; resolves once the change is durable. Returns false if it was already held. */
  async add(qid: string): Promise<boolean> {
    if (this.#ids.has(qid)) return false;
    this.#ids.add(qid);
    await this.#save();
    return true;
  }

  /** Releases qid; resolves once the change is durable. Returns false if it was not held. */
  async remove(qid: string): Promise<boolean> {
    if (!this.#ids.delete(qid)) return false;
    await this.#save();
    return true;
  }

  /** Writes the current set; writes are serialised, each one writes the set as it is then. */
  #save(): Promise<void> {
    const dir = this.#dir;
    if (dir === null) return Promise.resolve();
    const run = this.#chain.then(async () => {
      const path = join(dir, HELD_FILE);
      const tmp = `${path}.tmp`;
      const fh = await open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(`${JSON.stringify(this.ids)}\n`);
        if (this.#fsync) await fh.datasync();
      } finally {
        await fh.close();
      }
      try {
        await rename(tmp, path);
      } catch (err) {
        await unlink(tmp).catch(() => undefined);
        throw err;
      }
      if (this.#fsync) await syncDir(dir);
    });
    this.#chain = run.catch(() => undefined);
    return run;
  }
}
