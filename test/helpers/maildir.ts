/** Reads what landed in a test Maildir; polls (bounded) because delivery runs after the 250. */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

export async function maildirMessages(dataDir: string, domain: string, local: string): Promise<Buffer[]> {
  const dir = path.join(dataDir, 'mailboxes', domain, local, 'new');
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch {
    return [];
  }
  return Promise.all(names.map((n) => readFile(path.join(dir, n))));
}

/** Waits until the Maildir holds at least `count` messages (or the time is up) and returns them. */
export async function waitForMessages(
  dataDir: string,
  domain: string,
  local: string,
  count = 1,
  timeoutMs = 10_000,
): Promise<Buffer[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const msgs = await maildirMessages(dataDir, domain, local);
    if (msgs.length >= count || Date.now() > deadline) return msgs;
    await new Promise((r) => setTimeout(r, 25));
  }
}
