/**
 * A scripted milter for the tests of replies a real milter is hard to make give (reject,
 * tempfail, discard, quarantine, a custom reply, every modification): it speaks the milter
 * protocol (src/filters/milter-protocol.ts encodes its packets), records every packet the MTA
 * sends, answers "continue" to each step unless the script says otherwise, and at end of
 * message sends the script's modifications and final answer. opendkim (test/helpers/opendkim.ts)
 * is the real milter; this one only scripts answers.
 * Trust: test code only; binds 127.0.0.1.
 */
import net from 'node:net';
import { Cmd, cstr, packet, Reply, u32, type Packet } from '../../src/filters/milter-protocol.js';

export interface MilterScript {
  /** Our answer to option negotiation: the actions and protocol flags asked for. */
  actions?: number;
  protocol?: number;
  /** Answers instead of "continue", by MTA command (e.g. Cmd.RCPT). */
  at?: Partial<Record<string, Buffer[]>>;
  /** At end of message: modifications, then the final answer (default: continue). */
  eom?: Buffer[];
}

export interface ScriptedMilter {
  port: number;
  /** The packets of every connection, in order. */
  sessions: Packet[][];
  script: MilterScript;
  close(): Promise<void>;
}

/** Every modification (SMFIF_ADDHDRS | CHGBODY | ADDRCPT | DELRCPT | CHGHDRS | QUARANTINE). */
export const ALL_ACTIONS = 0x3f;

export const answer = {
  reject: (): Buffer => packet(Reply.REJECT),
  tempfail: (): Buffer => packet(Reply.TEMPFAIL),
  discard: (): Buffer => packet(Reply.DISCARD),
  accept: (): Buffer => packet(Reply.ACCEPT),
  continue: (): Buffer => packet(Reply.CONTINUE),
  replyCode: (text: string): Buffer => packet(Reply.REPLYCODE, cstr(text)),
  quarantine: (reason: string): Buffer => packet(Reply.QUARANTINE, cstr(reason)),
  addHeader: (name: string, value: string): Buffer => packet(Reply.ADDHEADER, cstr(name), cstr(value)),
  insertHeader: (index: number, name: string, value: string): Buffer =>
    packet(Reply.INSHEADER, u32(index), cstr(name), cstr(value)),
  changeHeader: (index: number, name: string, value: string): Buffer =>
    packet(Reply.CHGHEADER, u32(index), cstr(name), cstr(value)),
  replaceBody: (body: string): Buffer => packet(Reply.REPLBODY, body),
  addRcpt: (rcpt: string): Buffer => packet(Reply.ADDRCPT, cstr(rcpt)),
  deleteRcpt: (rcpt: string): Buffer => packet(Reply.DELRCPT, cstr(rcpt)),
};

export async function startScriptedMilter(): Promise<ScriptedMilter> {
  const sockets = new Set<net.Socket>();
  const m: ScriptedMilter = {
    port: 0,
    sessions: [],
    script: {},
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const seen: Packet[] = [];
    m.sessions.push(seen);
    let buf = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const len = buf.readUInt32BE(0);
        const p = { cmd: String.fromCharCode(buf[4] ?? 0), data: Buffer.from(buf.subarray(5, 4 + len)) };
        buf = buf.subarray(4 + len);
        seen.push(p);
        respond(socket, p, m.script);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  m.port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  return m;
}

function respond(socket: net.Socket, p: Packet, script: MilterScript): void {
  switch (p.cmd) {
    case Cmd.OPTNEG:
      socket.write(
        packet(Reply.OPTNEG, u32(6), u32(script.actions ?? ALL_ACTIONS), u32(script.protocol ?? 0)),
      );
      return;
    case Cmd.MACRO:
    case Cmd.QUIT:
    case Cmd.ABORT:
      return;
    case Cmd.BODYEOB:
      for (const b of script.eom ?? [answer.continue()]) socket.write(b);
      return;
    default:
      for (const b of script.at?.[p.cmd] ?? [answer.continue()]) socket.write(b);
  }
}

/** The NUL-separated strings of a packet's data, for assertions. */
export function texts(p: Packet | undefined): string[] {
  if (p === undefined) return [];
  return p.data.toString('utf8').split('\0').slice(0, -1);
}
