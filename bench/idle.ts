/**
 * Idle connections: opens N TCP connections to a server, waits for each greeting (RFC 5321
 * 4.3.1: the 220 a client must read before sending anything), then keeps them open and silent
 * until closed. Used to measure the server's resident memory per idle session.
 * Benchmark code: trusted, connects only to 127.0.0.1.
 */
import { connect, type Socket } from 'node:net';

export interface IdleConnections {
  /** Connections that received a 220 greeting and are still open. */
  open(): number;
  close(): void;
}

/**
 * Opens count connections, at most `parallel` handshakes at a time, and resolves when every
 * one has its 220 (or rejects at the first failure, after closing all of them).
 */
export async function openIdle(
  host: string,
  port: number,
  count: number,
  parallel = 200,
  timeoutMs = 60_000,
): Promise<IdleConnections> {
  const sockets = new Set<Socket>();
  const closeAll = (): void => {
    for (const s of sockets) s.destroy();
    sockets.clear();
  };
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const socket = connect({ host, port });
      sockets.add(socket);
      let greeting = '';
      const onData = (chunk: Buffer): void => {
        greeting += chunk.toString('latin1');
        if (!greeting.includes('\r\n')) return;
        socket.off('data', onData);
        if (greeting.startsWith('220')) resolve();
        else reject(new Error(`greeting: ${greeting.trim()}`));
      };
      socket.on('data', onData);
      socket.on('error', reject);
      socket.on('close', () => {
        sockets.delete(socket);
        reject(new Error('closed before the greeting'));
      });
    });

  let started = 0;
  const worker = async (): Promise<void> => {
    while (started < count) {
      started++;
      await one();
    }
  };
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      Promise.all(Array.from({ length: Math.min(parallel, count) }, worker)),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out opening ${count} connections`)), timeoutMs);
      }),
    ]);
  } catch (err) {
    closeAll();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return { open: () => sockets.size, close: closeAll };
}
