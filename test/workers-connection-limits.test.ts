/**
 * [limits] connections and connections_per_ip hold across the workers of a cluster
 * (cluster/connection-leases.ts, docs/workers.md "Connection limits across workers"): `sterna
 * serve` with two workers, every worker taking connections and the primary handing them out in
 * turn (NODE_CLUSTER_SCHED_POLICY=rr), so consecutive connections reach different workers.
 * Counted by each worker alone, as before, twice the limit got in.
 * Test-only code: binds 127.0.0.1 and 127.0.0.2 only, writes only under os.tmpdir().
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import {
  prepareServeDir,
  startRoundRobinSterna,
  waitForLog,
  type SternaProcess,
  killThenRemove,
} from './helpers/process.js';

interface Held {
  /** The first reply line, without CRLF; '' when the connection closed without one. */
  line: string;
  socket: net.Socket;
}

/** Connects from `from` and waits for the first reply line; the socket stays open. */
function connect(port: number, from: string): Promise<Held> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress: from });
    let buffer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no reply from 127.0.0.1:${port} within 10 s`));
    }, 10_000);
    const done = (line: string): void => {
      clearTimeout(timer);
      socket.removeAllListeners('data');
      resolve({ line, socket });
    };
    socket.on('data', (d: Buffer) => {
      buffer += d.toString('latin1');
      const end = buffer.indexOf('\r\n');
      if (end >= 0) done(buffer.slice(0, end));
    });
    socket.once('close', () => done(''));
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

const FROM_IP = '421 4.7.0 mx.sterna.test too many connections from your network, try again later';
const TOTAL = '421 4.7.0 mx.sterna.test too many connections, try again later';

test(
  'two workers: connections_per_ip and connections count every worker connection',
  { timeout: 120_000 },
  async (t) => {
    const serve = await prepareServeDir({
      prefix: 'sterna-conn-limits-',
      hostname: 'mx.sterna.test',
      domain: 'sterna.test',
      mailboxes: ['box@sterna.test'],
      workers: 2,
      connectionsPerWorker: 0,
      extra: '[limits]\nconnections = 5\nconnections_per_ip = 3\n',
    });
    const started: SternaProcess[] = [];
    const held: net.Socket[] = [];
    // One hook, in this order: the server stops writing into the directory before it goes.
    t.after(async () => {
      for (const s of held) s.destroy();
      await killThenRemove(started, serve.dir);
    });
    const server = await startRoundRobinSterna(serve, 0, 40_000);
    started.push(server);
    await waitForLog(server, (r) => r.fields['role'] === 'primary' && r.msg === 'worker ready', 2);
    const open = async (from: string): Promise<string> => {
      const c = await connect(serve.port, from);
      held.push(c.socket);
      return c.line;
    };

    // Six connections from one address, alternating between the workers: three get in.
    const first: string[] = [];
    for (let i = 0; i < 6; i++) first.push(await open('127.0.0.1'));
    assert.deepEqual(
      first.map((l) => l.slice(0, 3)),
      ['220', '220', '220', '421', '421', '421'],
      first.join(' | '),
    );
    assert.equal(first[3], FROM_IP);

    // One of them closes (on worker 0, the first): the next from that address gets its slot,
    // whichever worker it reaches, and the one after is refused again.
    const greeted = held.filter((_, i) => first[i]?.startsWith('220'));
    greeted[0]?.destroy();
    let again = '';
    for (let i = 0; i < 50 && !again.startsWith('220'); i++) {
      again = await open('127.0.0.1');
      if (!again.startsWith('220')) await new Promise((r) => setTimeout(r, 20));
    }
    assert.match(again, /^220 /);
    assert.equal(await open('127.0.0.1'), FROM_IP);

    // Another address: two more reach the total of five; the sixth is refused for the total.
    assert.match(await open('127.0.0.2'), /^220 /);
    assert.match(await open('127.0.0.2'), /^220 /);
    assert.equal(await open('127.0.0.2'), TOTAL);

    // Refused connections were logged with the key to raise.
    await waitForLog(
      server,
      (r) => r.msg === 'connection refused: limit reached' && r.fields['key'] === 'limits.connections',
      1,
    );
  },
);
