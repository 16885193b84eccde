/**
 * Outbound DKIM signing (RFC 6376; RFC 8463 ed25519-sha256; RFC 8301 key sizes), once, when a
 * message is final: at the end of data, before the commit, for every way mail enters (SMTP
 * DATA and BDAT, the maildrop of `sterna sendmail`, the HTTP API, Sterna's own reports). The
 * signer wraps the spool writer: every octet stored also goes, with backpressure, into
 * mailauth's signer, which hashes the body chunk by chunk as it streams (nothing is gathered
 * here; mailauth holds the header section, at most max_header_bytes of it). At the commit the
 * DKIM-Signature fields go into the spool prefix, so they sit at the top of every copy, above
 * the trace fields, and nothing Sterna does later touches a signed octet.
 *
 * What is signed: every domain of the RFC5322.From addresses that has an active key (or whose
 * nearest parent has: dkim-keys.ts), with each of its active keys, so an RSA and an ed25519 key
 * make two signatures (dual signing); relaxed/relaxed canonicalization; the header fields of
 * SIGNED_FIELDS that are present, From once more than present (oversigned, RFC 6376 8.15: a
 * From added later breaks the signature).
 *
 * The hashing, canonicalization and crypto are mailauth's (its DkimSigner, the class behind its
 * dkimSign()); mailauth's options cannot oversign (h= lists only the fields present) nor pick
 * the keys once the From field is read, so Sterna subclasses the signer for exactly those two
 * things (see docs/mail-auth.md, "What mailauth lacks").
 *
 * A signer failure never costs the message: it is queued unsigned, with an error log line.
 * Trust level: the message is the sender's (untrusted); the keys are the operator's secrets,
 * never logged.
 */
import { isAscii } from 'node:buffer';
import { DkimSigner as MailauthSigner, type ParsedHeaders } from 'mailauth/lib/dkim/dkim-signer.js';
import addressparser from 'nodemailer/lib/addressparser';
import type { MessageSink } from '../smtp/session.js';
import type { Envelope } from '../message/envelope.js';
import type { Logger } from '../observability/log.js';
import type { DkimKey, DkimKeyStore } from './dkim-keys.js';
import { HeaderSection, writeWithBackpressure } from './header-section.js';

/** The header fields a signature covers, when present (issue 9; RFC 6376 5.4.1). */
export const SIGNED_FIELDS = [
  'From',
  'To',
  'Cc',
  'Subject',
  'Date',
  'Message-ID',
  'MIME-Version',
  'Content-Type',
  'Reply-To',
  'In-Reply-To',
  'References',
] as const;

/** Where a message comes from, as far as signing is concerned. */
export type SigningOrigin =
  /** AUTH on a listener, or the HTTP API with a key: always signed. */
  | 'authenticated'
  /** `sterna sendmail`, the kernel vouching for the local user: always signed. */
  | 'local-user'
  /** A relay.trusted_networks client without AUTH: [dkim] sign_trusted_networks. */
  | 'trusted-network'
  /** Bounces, delay warnings, success reports: [dkim] sign_own_mail. */
  | 'own-mail';

/** The spool writer the signer wraps: the session's MessageSink (spool writer, maildrop, API, reports). */
export type SignableWriter = MessageSink;

export interface DkimSigningOptions {
  signTrustedNetworks: boolean;
  signOwnMail: boolean;
  maxHeaderBytes: number;
}

export class DkimSigning {
  readonly #keys: DkimKeyStore;
  readonly #o: DkimSigningOptions;
  readonly #log: Logger;

  constructor(keys: DkimKeyStore, o: DkimSigningOptions, log: Logger) {
    this.#keys = keys;
    this.#o = o;
    this.#log = log;
  }

  /** Whether mail of this origin is signed at all (when a key applies to its From). */
  signs(origin: SigningOrigin): boolean {
    if (!this.#keys.hasActiveKeys) return false;
    switch (origin) {
      case 'authenticated':
      case 'local-user':
        return true;
      case 'trusted-network':
        return this.#o.signTrustedNetworks;
      case 'own-mail':
        return this.#o.signOwnMail;
      default: {
        const never: never = origin;
        throw new Error(`unhandled signing origin ${String(never)}`);
      }
    }
  }

  /** `writer` itself when mail of this origin is not signed (origin null: never), else a signing writer around it. */
  wrap<W extends SignableWriter>(
    writer: W,
    origin: SigningOrigin | null,
    log: Logger = this.#log,
  ): W | SignableWriter {
    if (origin === null || !this.signs(origin)) return writer;
    return new SigningWriter(writer, this.#keys, this.#o.maxHeaderBytes, origin, log);
  }
}

/** The domains of the From field's addresses, lower-cased, each once. */
function fromDomains(headers: ParsedHeaders): string[] {
  const out = new Set<string>();
  for (const h of headers.parsed) {
    if (h.key !== 'from') continue;
    const text = h.line.toString('utf8');
    for (const a of addressparser(text.slice(text.indexOf(':') + 1).trim(), { flatten: true })) {
      const at = a.address.lastIndexOf('@');
      if (at > 0 && at < a.address.length - 1) out.add(a.address.slice(at + 1).toLowerCase());
    }
  }
  return [...out];
}

/** mailauth's signer, choosing its keys from the From field and oversigning From. */
class FromDomainSigner extends MailauthSigner {
  readonly #keysFor: (domain: string) => readonly DkimKey[];
  /** The keys chosen for this message (set once the header section is read). */
  chosen: DkimKey[] = [];

  constructor(keysFor: (domain: string) => readonly DkimKey[]) {
    super({ headerList: SIGNED_FIELDS.join(':'), signatureData: [] });
    this.#keysFor = keysFor;
  }

  override async messageHeaders(headers: ParsedHeaders): Promise<void> {
    const keys = new Set<DkimKey>();
    for (const domain of fromDomains(headers)) for (const k of this.#keysFor(domain)) keys.add(k);
    this.chosen = [...keys];
    for (const k of this.chosen) {
      this.signatureData.push({
        type: 'DKIM',
        signingDomain: k.domain,
        selector: k.selector,
        privateKey: k.pem,
        algorithm: k.algorithm === 'rsa' ? 'rsa-sha256' : 'ed25519-sha256',
        canonicalization: 'relaxed/relaxed',
      });
    }
    this.setupHashes();
    // h= is made of the signed fields' names as written; naming From once more than it
    // appears oversigns it (RFC 6376 5.4.2: a name with no field left contributes nothing).
    const from = headers.parsed.find((h) => h.key === 'from');
    if (from !== undefined) from.casedKey = `${from.casedKey}:From`;
    await super.messageHeaders(headers);
  }
}

/** A writer that stores every octet and streams it into the signer; signs at the commit. */
class SigningWriter implements SignableWriter {
  readonly #inner: SignableWriter;
  readonly #maxHeaderBytes: number;
  readonly #origin: SigningOrigin;
  readonly #log: Logger;
  readonly #keys: DkimKeyStore;
  // Reset by restart(): the signature covers the message as finally written.
  #signer!: FromDomainSigner;
  /** Resolves once the signer finished (null) or failed (the error); never rejects. */
  #finished!: Promise<Error | null>;
  #state: 'header' | 'body' | 'off' = 'header';
  #header = new HeaderSection();
  #eightBit = false;

  constructor(
    inner: SignableWriter,
    keys: DkimKeyStore,
    maxHeaderBytes: number,
    origin: SigningOrigin,
    log: Logger,
  ) {
    this.#inner = inner;
    this.#maxHeaderBytes = maxHeaderBytes;
    this.#origin = origin;
    this.#log = log;
    this.#keys = keys;
    this.#startSigner();
  }

  #startSigner(): void {
    const signer = new FromDomainSigner((d) => this.#keys.keysFor(d));
    this.#signer = signer;
    this.#finished = new Promise((resolve) => {
      signer.once('finish', () => resolve(null));
      signer.once('error', (err) => resolve(err));
      signer.once('close', () => resolve(new Error('the signer stopped')));
    });
    this.#state = 'header';
    this.#header = new HeaderSection();
    this.#eightBit = false;
  }

  readBack(): Promise<AsyncIterable<Buffer>> {
    if (this.#inner.readBack === undefined) return Promise.reject(new Error('this sink cannot read back'));
    return this.#inner.readBack();
  }

  /** The message is written again (a content filter changed it): so is the signature, from scratch. */
  restart(): void {
    if (this.#inner.restart === undefined) throw new Error('this sink cannot restart');
    this.#inner.restart();
    if (this.#state !== 'off') this.#signer.destroy();
    this.#startSigner();
  }

  get qid(): string {
    return this.#inner.qid;
  }

  get size(): number {
    return this.#inner.size;
  }

  async write(chunk: Buffer): Promise<void> {
    await this.#inner.write(chunk);
    if (this.#state === 'off' || chunk.length === 0) return;
    if (!this.#eightBit && !isAscii(chunk)) this.#eightBit = true;
    if (this.#state === 'header' && !this.#scanHeader(chunk)) return;
    await writeWithBackpressure(this.#signer, chunk);
  }

  /** Follows the header section to its empty line; gives up signing (false) when it is too large. */
  #scanHeader(chunk: Buffer): boolean {
    if (this.#header.scan(chunk)) this.#state = 'body';
    if (this.#header.bytes > this.#maxHeaderBytes) {
      this.#stop();
      this.#log.warn(
        { qid: this.qid, limit: this.#maxHeaderBytes },
        'dkim: header section over dkim.max_header_bytes; message not signed',
      );
      return false;
    }
    return true;
  }

  #stop(): void {
    this.#state = 'off';
    this.#signer.destroy();
  }

  async commit(envelope: Envelope, prefix?: Buffer): Promise<void> {
    const signed = this.#state === 'off' ? null : await this.#sign();
    if (signed === null) return this.#inner.commit(envelope, prefix);
    const fields = Buffer.from(signed.map((s) => `${s}\r\n`).join(''), 'utf8');
    const env: Envelope = { ...envelope, dkimSigned: true };
    // Signed 8-bit content goes on only to a next hop that takes 8-bit (smtp-client.ts):
    // record it even when the client did not declare BODY=8BITMIME.
    if (this.#eightBit && envelope.mailParams.body !== 'BINARYMIME')
      env.mailParams = { ...envelope.mailParams, body: '8BITMIME' };
    return this.#inner.commit(env, prefix === undefined ? fields : Buffer.concat([fields, prefix]));
  }

  /** Ends the signer; the DKIM-Signature fields (unfolded ends, no CRLF), or null for none. */
  async #sign(): Promise<string[] | null> {
    // A message that is all header section: the signer sees its (empty) body start, which
    // canonicalizes as no body at all (RFC 6376 3.4.4), as the verifier will read it.
    if (this.#state === 'header') this.#signer.write(Buffer.from('\r\n'));
    // One reading of the clock for t=: the signed form and the emitted field must agree
    // (dkim-sign-internals.d.ts, signTime).
    this.#signer.signTime = new Date();
    this.#signer.end();
    const err = await this.#finished;
    const signer = this.#signer;
    if (err !== null) {
      this.#log.error({ qid: this.qid, err }, 'dkim: signing failed; message queued unsigned');
      return null;
    }
    for (const e of signer.errors) {
      this.#log.error(
        { qid: this.qid, d: e.signingDomain, s: e.selector, err: e.err },
        'dkim: a signature could not be made',
      );
    }
    if (signer.chosen.length === 0) {
      this.#log.debug(
        { qid: this.qid, origin: this.#origin },
        'dkim: no key for the From domain; not signed',
      );
      return null;
    }
    if (signer.signatureHeaders.length === 0) return null;
    this.#log.info(
      {
        qid: this.qid,
        origin: this.#origin,
        dkim: signer.chosen.map((k) => ({
          d: k.domain,
          s: k.selector,
          a: k.algorithm === 'rsa' ? 'rsa-sha256' : 'ed25519-sha256',
        })),
      },
      'dkim signed',
    );
    return signer.signatureHeaders;
  }

  abort(): void {
    if (this.#state !== 'off') this.#stop();
    this.#inner.abort();
  }
}
