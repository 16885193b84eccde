/**
 * The STARTTLS floor for the tls group (issue 11): a bare SMTP responder in Node that speaks just
 * enough of the protocol for bench/connect-load.ts (220, EHLO, STARTTLS, EHLO, MAIL, RCPT, DATA
 * up to the dot, QUIT) over Node's TLS, and keeps nothing: no spool, no fsync, no logging, no
 * checks. What it reaches on this machine with the same generator is what any Node server
 * reaches at best, the way smtp-sink is the floor of the plain rows.
 * startTlsFloor runs it as a child process (`node tls-floor.js <cert> <key> [processes]`, which
 * prints its port), so its CPU time is its own; in as many processes as Sterna has workers, so
 * that both use the cores alike.
 * Benchmark code: trusted; listens on 127.0.0.1 only.
 */
import { spawn } from 'node:child_process';
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { createSecureContext, TLSSocket, type SecureContext } from 'node:tls';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { CertFiles } from './tls-certs.js';

export interface TlsFloor {
  port: number;
  pid: number;
  stop: () => Promise<void>;
}

/** The end of a message's data: the dot line. */
const END_OF_DATA = Buffer.from('\r\n.\r\n');
/** Longest command line the responder holds before it gives up on a connection. */
const MAX_LINE_BYTES = 4096;

/** Answers one connection: plain until STARTTLS, then over TLS until QUIT. */
function answer(socket: Socket, context: SecureContext): void {
  let stream: Socket | TLSSocket = socket;
  let secure = false;
  let pending: Buffer = Buffer.alloc(0);
  let inData = false;
  const onData = (chunk: Buffer): void => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    for (;;) {
      if (inData) {
        // The dot may arrive split across reads: keep the last 4 bytes for the next search.
        const end = pending.indexOf(END_OF_DATA);
        if (end < 0) {
          if (pending.length > END_OF_DATA.length) pending = pending.subarray(pending.length - 4);
          return;
        }
        pending = pending.subarray(end + END_OF_DATA.length);
        inData = false;
        stream.write('250 2.0.0 Ok: kept nowhere\r\n');
        continue;
      }
      const eol = pending.indexOf('\r\n');
      if (eol < 0) {
        if (pending.length > MAX_LINE_BYTES) stream.destroy();
        return;
      }
      const verb = pending.toString('latin1', 0, Math.min(eol, 4)).toUpperCase();
      pending = pending.subarray(eol + 2);
      switch (verb) {
        case 'EHLO':
          stream.write(secure ? '250 floor.bench.local\r\n' : '250-floor.bench.local\r\n250 STARTTLS\r\n');
          break;
        case 'STAR':
          // Anything pipelined after STARTTLS is dropped (RFC 3207 5), then the handshake.
          stream.write('220 2.0.0 Ready to start TLS\r\n');
          pending = Buffer.alloc(0);
          stream.removeListener('data', onData);
          stream = new TLSSocket(socket, { isServer: true, secureContext: context });
          secure = true;
          stream.on('data', onData);
          stream.on('error', () => stream.destroy());
          return;
        case 'DATA':
          inData = true;
          stream.write('354 End data with <CR><LF>.<CR><LF>\r\n');
          // The body may follow in the same read: it starts after a line end of its own, so an
          // empty body's dot is found too.
          pending = Buffer.concat([Buffer.from('\r\n'), pending]);
          break;
        case 'QUIT':
          stream.end('221 2.0.0 Bye\r\n');
          return;
        default:
          stream.write('250 2.0.0 Ok\r\n');
      }
    }
  };
  socket.on('data', onData);
  socket.on('error', () => socket.destroy());
  socket.write('220 floor.bench.local ESMTP\r\n');
}

/**
 * The child process: listens on a free loopback port and prints it. With `processes` > 1 it is
 * a node:cluster primary whose workers share the port, each accepting for itself (SCHED_NONE, as
 * Sterna's workers do), and prints the port once every worker listens.
 */
function serve(certFile: string, keyFile: string, processes: number): void {
  if (processes > 1 && cluster.isPrimary) {
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    const ports: number[] = [];
    for (let i = 0; i < processes; i++)
      cluster.fork().on('message', (m: unknown) => {
        if (typeof m === 'number') ports.push(m);
        if (ports.length === processes) process.stdout.write(`${ports[0] ?? 0}\n`);
      });
    process.on('SIGTERM', () => {
      for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGTERM');
      process.exit(0);
    });
    return;
  }
  const context = createSecureContext({ cert: readFileSync(certFile), key: readFileSync(keyFile) });
  const server = createServer((socket) => answer(socket, context));
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    if (cluster.isWorker) process.send?.(address.port);
    else process.stdout.write(`${address.port}\n`);
  });
  process.on('SIGTERM', () => process.exit(0));
}

/** Starts the floor responder with `cert` in a child process, in `processes` processes. */
export async function startTlsFloor(cert: CertFiles, processes = 1): Promise<TlsFloor> {
  const args = [fileURLToPath(import.meta.url), cert.certFile, cert.keyFile, String(processes)];
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('tls-floor: could not start');
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      if (out.includes('\n')) resolve(Number(out.trim()));
    });
    void exited.then(() => reject(new Error('tls-floor exited before listening')));
  });
  return {
    port,
    pid,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [certFile, keyFile, count = '1'] = process.argv.slice(2);
  const processes = Number(count);
  if (certFile === undefined || keyFile === undefined || !Number.isInteger(processes) || processes < 1) {
    process.stderr.write('usage: node tls-floor.js CERT_FILE KEY_FILE [PROCESSES]\n');
    process.exit(2);
  }
  serve(certFile, keyFile, processes);
}
