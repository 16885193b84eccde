import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { ConfigError } from '../config/load.js';
import { TicketKeys } from './ticket-keys.js';
import {
  TlsContextProvider,
  ensureTlsMaterial,
  generateSelfSigned,
  type TlsLogger,
  type TlsMaterial,
} from './tls.js';

interface LogLine {
  level: 'info' | 'warn' | 'error';
  obj: object;
  msg: string;
}

function recordingLogger(): { logger: TlsLogger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  return {
    lines,
    logger: {
      info: (obj, msg) => lines.push({ level: 'info', obj, msg }),
      warn: (obj, msg) => lines.push({ level: 'warn', obj, msg }),
      error: (obj, msg) => lines.push({ level: 'error', obj, msg }),
    },
  };
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'sterna-tls-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function fingerprint(pem: Buffer | string): string {
  return new X509Certificate(pem).fingerprint256;
}

/** Writes a fresh self-signed pair to the given paths and returns its certificate fingerprint. */
async function writePair(
  certFile: string,
  keyFile: string,
  cn: string,
  notBefore = new Date(),
): Promise<string> {
  const pair = await generateSelfSigned(cn, notBefore);
  await writeFile(keyFile, pair.key, { mode: 0o600 });
  await writeFile(certFile, pair.cert);
  return fingerprint(pair.cert);
}

function connect(port: number, opts: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('TLS handshake timed out'));
    }, 5000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
  });
}

function peerFingerprint(socket: tls.TLSSocket): string {
  return socket.getPeerCertificate().fingerprint256;
}

/** Writes a line and waits for the echo server to send it back. */
function echo(socket: tls.TLSSocket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no echo')), 3000);
    socket.once('data', (d: Buffer) => {
      clearTimeout(timer);
      resolve(d.toString());
    });
    socket.write(text);
  });
}

interface EchoServer {
  port: number;
  clientErrors: Error[];
  close(): Promise<void>;
}

/** Handshake failures the server reported (a client closing early shows up as ECONNRESET: ignored). */
function sslErrorCodes(server: EchoServer): string[] {
  return server.clientErrors
    .map((e) => ('code' in e && typeof e.code === 'string' ? e.code : ''))
    .filter((c) => c.startsWith('ERR_SSL'));
}

async function startTlsServer(provider: TlsContextProvider): Promise<EchoServer> {
  const clientErrors: Error[] = [];
  const sockets = new Set<net.Socket>();
  const server = tls.createServer(provider.serverOptions(), (s) => s.pipe(s));
  provider.attach(server);
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', (err) => clientErrors.push(err));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address() as net.AddressInfo;
  return {
    port: addr.port,
    clientErrors,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A plain TCP server that upgrades every connection with new tls.TLSSocket, as STARTTLS does. */
async function startUpgradeServer(provider: TlsContextProvider): Promise<EchoServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((raw) => {
    sockets.add(raw);
    raw.once('close', () => sockets.delete(raw));
    const secure = new tls.TLSSocket(raw, { isServer: true, ...provider.serverOptions() });
    secure.on('error', () => secure.destroy());
    secure.pipe(secure);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address() as net.AddressInfo;
  return {
    port: addr.port,
    clientErrors: [],
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

async function configuredMaterial(dir: string, cn: string): Promise<{ material: TlsMaterial; fp: string }> {
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  const fp = await writePair(certFile, keyFile, cn);
  const material = await ensureTlsMaterial({ certFile, keyFile, dataDir: dir, hostname: cn });
  return { material, fp };
}

test(
  'no tls files configured: generates a self-signed TEST certificate (key mode 0600) and reuses it',
  { timeout: 30_000 },
  async () => {
    await withTempDir(async (dir) => {
      const { logger, lines } = recordingLogger();
      const cfg = { certFile: '', keyFile: '', dataDir: dir, hostname: 'mx.example.test' };
      const first = await ensureTlsMaterial(cfg, logger);
      assert.equal(first.generated, true);
      assert.equal(first.certFile, join(dir, 'tls', 'test-cert.pem'));
      assert.equal(first.keyFile, join(dir, 'tls', 'test-key.pem'));
      assert.equal((await stat(first.keyFile)).mode & 0o777, 0o600);
      assert.deepEqual(await readFile(first.certFile), first.cert);
      assert.deepEqual(await readFile(first.keyFile), first.key);

      const x509 = new X509Certificate(first.cert);
      assert.equal(x509.subject, 'CN=mx.example.test');
      assert.equal(
        x509.subjectAltName,
        'DNS:mx.example.test, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1',
      );
      const validDays = (Date.parse(x509.validTo) - Date.parse(x509.validFrom)) / 86_400_000;
      assert.equal(Math.round(validDays), 365);
      // ECDSA P-256: about 1.5x the full handshakes of RSA-2048 (docs/tls.md).
      assert.equal(x509.publicKey.asymmetricKeyType, 'ec');
      assert.equal(x509.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
      assert.ok(lines.some((l) => l.level === 'warn' && l.msg.includes('TEST certificate')));

      const second = await ensureTlsMaterial(cfg, logger);
      assert.equal(second.generated, true);
      assert.deepEqual(second.cert, first.cert);
      assert.deepEqual(second.key, first.key);
    });
  },
);

test(
  'generated test certificate is replaced when it expires within 30 days, names another host or is RSA',
  { timeout: 30_000 },
  async () => {
    await withTempDir(async (dir) => {
      const cfg = { certFile: '', keyFile: '', dataDir: dir, hostname: 'mx.example.test' };
      const first = await ensureTlsMaterial(cfg);
      // Valid one year from 350 days ago: 15 days left.
      const oldFp = await writePair(
        first.certFile,
        first.keyFile,
        'mx.example.test',
        new Date(Date.now() - 350 * 86_400_000),
      );
      const renewed = await ensureTlsMaterial(cfg);
      assert.notEqual(fingerprint(renewed.cert), oldFp);
      assert.equal(fingerprint(await readFile(renewed.certFile)), fingerprint(renewed.cert));

      const renamed = await ensureTlsMaterial({ ...cfg, hostname: 'other.example.test' });
      assert.equal(new X509Certificate(renamed.cert).subject, 'CN=other.example.test');

      // A test certificate generated before they were ECDSA (an RSA one) is replaced by one.
      const { logger, lines } = recordingLogger();
      const rsa = await generateSelfSigned('other.example.test', new Date(), 'rsa');
      await writeFile(renamed.keyFile, rsa.key, { mode: 0o600 });
      await writeFile(renamed.certFile, rsa.cert);
      const ecdsa = await ensureTlsMaterial({ ...cfg, hostname: 'other.example.test' }, logger);
      assert.notEqual(fingerprint(ecdsa.cert), fingerprint(rsa.cert));
      assert.equal(new X509Certificate(ecdsa.cert).publicKey.asymmetricKeyType, 'ec');
      assert.ok(
        lines.some(
          (l) => 'reason' in l.obj && l.obj.reason === 'it is rsa; the test certificate is ECDSA P-256 now',
        ),
      );
    });
  },
);

test(
  'configured tls files that are missing, unparsable or mismatched are refused, naming the key',
  { timeout: 30_000 },
  async () => {
    await withTempDir(async (dir) => {
      const certFile = join(dir, 'cert.pem');
      const keyFile = join(dir, 'key.pem');
      const base = { certFile, keyFile, dataDir: dir, hostname: 'mx.example.test' };

      await assert.rejects(ensureTlsMaterial(base), (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.deepEqual(
          e.problems.map((p) => p.message),
          [
            `tls.cert_file: cannot read ${certFile}: no such file`,
            `tls.key_file: cannot read ${keyFile}: no such file`,
          ],
        );
        assert.equal(e.key, 'tls.cert_file');
        return true;
      });

      await writePair(certFile, keyFile, 'mx.example.test');
      await writeFile(certFile, 'not a certificate\n');
      await assert.rejects(ensureTlsMaterial(base), (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.key, 'tls.cert_file');
        assert.equal(e.problems.length, 1);
        assert.match(e.problems[0]!.message, /^tls\.cert_file: .*cert\.pem does not hold a PEM certificate/);
        return true;
      });

      await writePair(certFile, keyFile, 'mx.example.test');
      const other = await generateSelfSigned('other.example.test', new Date());
      await writeFile(keyFile, other.key);
      await assert.rejects(ensureTlsMaterial(base), (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.key, 'tls.key_file');
        assert.deepEqual(
          e.problems.map((p) => p.message),
          [`tls.key_file: the key in ${keyFile} does not belong to the certificate in ${certFile}`],
        );
        return true;
      });

      await assert.rejects(ensureTlsMaterial({ ...base, keyFile: '' }), (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.key, 'tls.key_file');
        return true;
      });
    });
  },
);

test('configured pair that matches is loaded as is (generated: false)', { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const { material, fp } = await configuredMaterial(dir, 'mx.example.test');
    assert.equal(material.generated, false);
    assert.equal(fingerprint(material.cert), fp);
    assert.equal(material.certFile, join(dir, 'cert.pem'));
  });
});

test(
  'RFC 8996: server accepts TLS 1.2 and 1.3 and refuses a TLS 1.1 client',
  { timeout: 30_000 },
  async () => {
    await withTempDir(async (dir) => {
      const { material } = await configuredMaterial(dir, 'localhost');
      const provider = new TlsContextProvider(material, { minVersion: 'TLSv1.2' });
      const server = await startTlsServer(provider);
      try {
        const c12 = await connect(server.port, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
        assert.equal(c12.getProtocol(), 'TLSv1.2');
        assert.equal(await echo(c12, 'ping 1.2\n'), 'ping 1.2\n');
        c12.destroy();

        const c13 = await connect(server.port, { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' });
        assert.equal(c13.getProtocol(), 'TLSv1.3');
        c13.destroy();

        // SECLEVEL=0 lets the client itself offer TLS 1.1, so the refusal is the server's.
        await assert.rejects(
          connect(server.port, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }),
        );
        assert.deepEqual(sslErrorCodes(server), ['ERR_SSL_UNSUPPORTED_PROTOCOL']);
      } finally {
        provider.close();
        await server.close();
      }
    });
  },
);

test('tls.min_version TLSv1.3 refuses a TLS 1.2 client', { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const { material } = await configuredMaterial(dir, 'localhost');
    const provider = new TlsContextProvider(material, { minVersion: 'TLSv1.3' });
    const server = await startTlsServer(provider);
    try {
      await assert.rejects(connect(server.port, { maxVersion: 'TLSv1.2' }));
      assert.deepEqual(sslErrorCodes(server), ['ERR_SSL_UNSUPPORTED_PROTOCOL']);
      const c13 = await connect(server.port);
      assert.equal(c13.getProtocol(), 'TLSv1.3');
      c13.destroy();
    } finally {
      provider.close();
      await server.close();
    }
  });
});

test(
  'reload: new connections get the new certificate, an open connection keeps working',
  { timeout: 30_000 },
  async () => {
    await withTempDir(async (dir) => {
      const { material, fp: fpA } = await configuredMaterial(dir, 'localhost');
      const { logger, lines } = recordingLogger();
      const provider = new TlsContextProvider(material, { minVersion: 'TLSv1.2', logger });
      const server = await startTlsServer(provider);
      const upgrade = await startUpgradeServer(provider);
      try {
        const open = await connect(server.port);
        assert.equal(peerFingerprint(open), fpA);
        assert.equal(await provider.reload(), false, 'unchanged files: no new context');

        const fpB = await writePair(material.certFile, material.keyFile, 'localhost');
        assert.equal(await provider.reload(), true);

        const noSni = await connect(server.port);
        assert.equal(peerFingerprint(noSni), fpB);
        noSni.destroy();
        const withSni = await connect(server.port, { servername: 'localhost' });
        assert.equal(peerFingerprint(withSni), fpB);
        withSni.destroy();
        const upgraded = await connect(upgrade.port);
        assert.equal(peerFingerprint(upgraded), fpB);
        upgraded.destroy();

        // The session opened before the reload is untouched.
        assert.equal(await echo(open, 'still here\n'), 'still here\n');
        assert.equal(peerFingerprint(open), fpA);
        open.destroy();

        // A broken file on reload: the previous context stays.
        await writeFile(
          material.certFile,
          '-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n',
        );
        assert.equal(await provider.reload(), false);
        const after = await connect(server.port);
        assert.equal(peerFingerprint(after), fpB);
        after.destroy();
        const failure = lines.find((l) => l.level === 'error');
        assert.equal(failure?.msg, 'TLS reload failed; the previous certificate stays in use');
      } finally {
        provider.close();
        await server.close();
        await upgrade.close();
      }
    });
  },
);

test('watch: a changed certificate on disk is picked up without a signal', { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const { material, fp: fpA } = await configuredMaterial(dir, 'localhost');
    const provider = new TlsContextProvider(material, {
      minVersion: 'TLSv1.2',
      pollIntervalMs: 200,
      debounceMs: 50,
    });
    const server = await startTlsServer(provider);
    try {
      provider.watch();
      const before = await connect(server.port);
      assert.equal(peerFingerprint(before), fpA);
      before.destroy();

      const fpB = await writePair(material.certFile, material.keyFile, 'localhost');
      const deadline = Date.now() + 5000;
      let seen = fpA;
      while (seen !== fpB && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        const c = await connect(server.port);
        seen = peerFingerprint(c);
        c.destroy();
      }
      assert.equal(seen, fpB);
    } finally {
      provider.close();
      await server.close();
    }
  });
});

/** A handshake offering `session`; returns whether it resumed and the ticket it was given. */
async function resume(port: number, session?: Buffer): Promise<{ reused: boolean; ticket: Buffer }> {
  const tickets: Buffer[] = [];
  const socket = await connect(port, session !== undefined ? { session } : {});
  socket.on('session', (t: Buffer) => tickets.push(t));
  // One round trip after the handshake: by then the server's tickets (TLS 1.3) have come.
  await echo(socket, 'ping\n');
  const reused = socket.isSessionReused();
  socket.destroy();
  const ticket = tickets.at(-1) ?? socket.getSession();
  assert.ok(ticket !== undefined, 'the server issued a ticket');
  return { reused, ticket };
}

test(
  'shared ticket keys: a ticket from one provider resumes on another, across reloads; a rotation ends the old ones',
  { timeout: 30_000 },
  async () => {
    await withTempDir(async (dir) => {
      const { material } = await configuredMaterial(dir, 'localhost');
      const keys = new TicketKeys();
      // Two providers with the same keys: two workers of a cluster.
      const a = new TlsContextProvider(material, { minVersion: 'TLSv1.2', ticketKeys: keys });
      const b = new TlsContextProvider(material, { minVersion: 'TLSv1.2', ticketKeys: keys });
      const upgradeA = await startUpgradeServer(a);
      const upgradeB = await startUpgradeServer(b);
      try {
        const first = await resume(upgradeA.port);
        assert.equal(first.reused, false);
        assert.equal((await resume(upgradeB.port, first.ticket)).reused, true, 'resumed on the other');

        // A certificate reload builds a new context: it keeps the shared keys.
        await writePair(material.certFile, material.keyFile, 'localhost');
        assert.equal(await a.reload(), true);
        assert.equal((await resume(upgradeA.port, first.ticket)).reused, true, 'resumed after reload');

        // Rotation: Node holds one key set, so a ticket sealed before it gets a full handshake;
        // tickets sealed after it resume on every provider.
        keys.set(randomBytes(48));
        assert.equal((await resume(upgradeB.port, first.ticket)).reused, false, 'old ticket after rotation');
        const second = await resume(upgradeB.port);
        assert.equal((await resume(upgradeA.port, second.ticket)).reused, true);
      } finally {
        a.close();
        b.close();
        await upgradeA.close();
        await upgradeB.close();
      }
    });
  },
);

test('without shared ticket keys each provider seals its own tickets', { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const { material } = await configuredMaterial(dir, 'localhost');
    const a = new TlsContextProvider(material, { minVersion: 'TLSv1.2' });
    const b = new TlsContextProvider(material, { minVersion: 'TLSv1.2' });
    const upgradeA = await startUpgradeServer(a);
    const upgradeB = await startUpgradeServer(b);
    try {
      const first = await resume(upgradeA.port);
      assert.equal((await resume(upgradeA.port, first.ticket)).reused, true, 'same provider');
      assert.equal((await resume(upgradeB.port, first.ticket)).reused, false, 'another provider');
    } finally {
      a.close();
      b.close();
      await upgradeA.close();
      await upgradeB.close();
    }
  });
});
