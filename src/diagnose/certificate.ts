/**
 * The certificate the listeners serve ([tls] cert_file and key_file): readable PEM, the key
 * matching the certificate, the chain in order (each certificate issued by the next, RFC 8446
 * 4.4.2 / RFC 5246 7.4.2), ending at a CA this machine trusts (or one given with --ca-file), the
 * host name among its names (RFC 6125), and its dates: expired is an error, under 21 days left a
 * warning. Without cert_file Sterna serves a generated self-signed certificate, which is a
 * warning. The optional second pair ([tls] ecdsa_cert_file and ecdsa_key_file) gets the same
 * checks, plus that its key is an ECDSA one; its findings name its own keys.
 * Trust: the files are the operator's; they are only parsed.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { rootCertificates } from 'node:tls';
import { finding, type Finding } from './finding.js';

/** Fewer days than this before expiry is a warning. */
export const EXPIRY_WARNING_DAYS = 21;
const DAY_MS = 24 * 3600 * 1000;

/** Which of the two pairs of [tls] is checked: the main one, or the ECDSA one beside it. */
export type CertificatePair = 'main' | 'ecdsa';

/** The configuration keys of each pair, as findings name them. */
const PAIR_KEYS: Record<CertificatePair, { cert: string; key: string; what: string }> = {
  main: { cert: 'cert_file', key: 'key_file', what: 'the certificate' },
  ecdsa: { cert: 'ecdsa_cert_file', key: 'ecdsa_key_file', what: 'the ECDSA certificate' },
};

export interface CertificateInput {
  hostname: string;
  certFile: string;
  keyFile: string;
  /** The pair the files are (default the main one). */
  pair?: CertificatePair;
  /** Extra trusted CA certificates (PEM), besides the system's. */
  caFile?: string;
  now: Date;
}

/** Every PEM certificate in `text`, parsed. */
function certificates(text: string): X509Certificate[] {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new X509Certificate(b));
}

function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
}

async function trustedCas(caFile: string | undefined): Promise<X509Certificate[]> {
  const system = rootCertificates.map((pem) => new X509Certificate(pem));
  return caFile === undefined ? system : [...system, ...certificates(await readFile(caFile, 'utf8'))];
}

export async function checkCertificate(input: CertificateInput): Promise<Finding[]> {
  const { hostname, certFile, now } = input;
  const pair = input.pair ?? 'main';
  const keys = PAIR_KEYS[pair];
  const get =
    pair === 'main'
      ? `get a certificate for ${hostname} (e.g. certbot certonly --standalone -d ${hostname}) and set [tls] cert_file (the full chain) and key_file`
      : `get an ECDSA certificate for ${hostname} (e.g. certbot certonly --key-type ecdsa --standalone -d ${hostname}) and set [tls] ecdsa_cert_file (the full chain) and ecdsa_key_file`;
  if (certFile === '') {
    // Only the main pair has a generated fallback; an ECDSA pair is optional.
    if (pair === 'ecdsa') return [];
    return [
      finding(
        'certificate',
        'warning',
        'cert.test-certificate',
        '[tls] cert_file',
        'no certificate is configured: Sterna serves a generated self-signed one, which senders that verify (MTA-STS, DANE) refuse',
        get,
      ),
    ];
  }
  const findings: Finding[] = [];
  const err = (id: string, message: string, fix = get): Finding[] => [
    finding('certificate', 'error', id, certFile, message, fix),
  ];
  let chain: X509Certificate[];
  try {
    chain = certificates(await readFile(certFile, 'utf8'));
  } catch (e) {
    return err('cert.unreadable', `cannot read ${keys.what}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const leaf = chain[0];
  if (leaf === undefined) return err('cert.unreadable', 'the file holds no PEM certificate');
  try {
    const key = createPrivateKey(await readFile(input.keyFile, 'utf8'));
    if (!leaf.checkPrivateKey(key)) {
      findings.push(
        ...err(
          'cert.key-mismatch',
          `the key in ${input.keyFile} does not belong to ${keys.what}: TLS handshakes fail`,
          `set [tls] ${keys.key} to the key the certificate was made for`,
        ),
      );
    } else if (pair === 'ecdsa' && key.asymmetricKeyType !== 'ec') {
      findings.push(
        ...err(
          'cert.not-ecdsa',
          `the ECDSA pair holds a ${key.asymmetricKeyType ?? 'non-EC'} key: clients that prefer ECDSA never get it`,
          `put an ECDSA certificate and key in [tls] ${keys.cert} and ${keys.key}, or leave them empty`,
        ),
      );
    }
  } catch (e) {
    findings.push(
      ...err(
        'cert.key-unreadable',
        `cannot read the key ${input.keyFile}: ${e instanceof Error ? e.message : String(e)}`,
        `set [tls] ${keys.key} to the certificate's private key (PEM)`,
      ),
    );
  }
  const until = new Date(leaf.validTo);
  const from = new Date(leaf.validFrom);
  const days = Math.floor((until.getTime() - now.getTime()) / DAY_MS);
  if (until.getTime() <= now.getTime()) {
    findings.push(
      ...err(
        'cert.expired',
        `${keys.what} expired on ${until.toISOString()}: senders that verify refuse to deliver, others see an invalid certificate`,
        `renew it: ${get}`,
      ),
    );
  } else if (from.getTime() > now.getTime()) {
    findings.push(
      ...err(
        'cert.not-yet-valid',
        `${keys.what} is valid only from ${from.toISOString()}`,
        'check the clock of this machine, or use the previous certificate until then',
      ),
    );
  } else if (days < EXPIRY_WARNING_DAYS) {
    findings.push(
      finding(
        'certificate',
        'warning',
        'cert.expiring',
        certFile,
        `${keys.what} expires in ${days} days (${until.toISOString()})`,
        `renew it now (certbot renew), then reload Sterna (SIGHUP) if it does not pick up the new file by itself`,
      ),
    );
  }
  if (leaf.checkHost(hostname) === undefined) {
    findings.push(
      ...err(
        'cert.name-mismatch',
        `${keys.what} does not name ${hostname} (it names ${leaf.subjectAltName ?? leaf.subject}): senders that verify refuse it`,
      ),
    );
  }
  for (let i = 0; i + 1 < chain.length; i++) {
    const [cert, next] = [chain[i], chain[i + 1]];
    if (cert !== undefined && next !== undefined && !issuedBy(cert, next)) {
      findings.push(
        ...err(
          'cert.chain-order',
          `certificate ${i + 2} in the file did not issue certificate ${i + 1}: the chain is out of order or holds a stranger`,
          'put the server certificate first, then each issuer in order (certbot: fullchain.pem)',
        ),
      );
      return findings;
    }
  }
  const top = chain[chain.length - 1] ?? leaf;
  let cas: X509Certificate[];
  try {
    cas = await trustedCas(input.caFile);
  } catch (e) {
    return [
      ...findings,
      ...err(
        'cert.ca-unreadable',
        `cannot read the CA file ${input.caFile ?? ''}: ${e instanceof Error ? e.message : String(e)}`,
        'give --ca-file a PEM file of CA certificates',
      ),
    ];
  }
  const trusted = cas.some((ca) => ca.fingerprint256 === top.fingerprint256 || issuedBy(top, ca));
  if (!trusted) {
    const selfSigned = chain.length === 1 && issuedBy(leaf, leaf);
    findings.push(
      finding(
        'certificate',
        'warning',
        selfSigned ? 'cert.self-signed' : 'cert.untrusted',
        certFile,
        selfSigned
          ? `${keys.what} is self-signed: senders that verify (MTA-STS, DANE) refuse it`
          : 'the chain does not lead to a CA this machine trusts: an intermediate certificate may be missing from the file',
        selfSigned
          ? get
          : `put the intermediate certificates after the server certificate in ${keys.cert} (certbot: fullchain.pem, not cert.pem)`,
      ),
    );
  }
  if (findings.length === 0) {
    findings.push(
      finding(
        'certificate',
        'ok',
        'cert.ok',
        certFile,
        `${keys.what} names ${hostname}, its chain is complete, it is valid until ${until.toISOString()} (${days} days)`,
      ),
    );
  }
  return findings;
}
