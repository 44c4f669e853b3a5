'use strict';
// Fast X.509 for the benchmark: a P-256 device CA and N device certificates built as DER in
// Node (node:crypto has keys and ECDSA but no certificate builder). About 0.2 ms per device
// instead of ~10 ms per `openssl` process. The certificates carry what tests/e2e/lib/pki.js
// gives a device leaf: basicConstraints CA:FALSE, keyUsage, EKU clientAuth, SKI and AKI.
const crypto = require('node:crypto');

function len(n) {
  if (n < 0x80) return Buffer.from([n]);
  const bytes = [];
  for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
const tlv = (tag, content) => Buffer.concat([Buffer.from([tag]), len(content.length), content]);
const seq = (...items) => tlv(0x30, Buffer.concat(items));
const set = (...items) => tlv(0x31, Buffer.concat(items));
const explicit = (n, content) => tlv(0xa0 + n, content);
const octets = (buf) => tlv(0x04, buf);
const bits = (buf, unused = 0) => tlv(0x03, Buffer.concat([Buffer.from([unused]), buf]));
const bool = (v) => tlv(0x01, Buffer.from([v ? 0xff : 0x00]));
const utf8 = (s) => tlv(0x0c, Buffer.from(s, 'utf8'));

function int(buf) {
  let b = Buffer.isBuffer(buf) ? buf : Buffer.from([buf]);
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i += 1;
  b = b.subarray(i);
  if (b[0] & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(0x02, b);
}

function oid(text) {
  const parts = text.split('.').map(Number);
  const out = [40 * parts[0] + parts[1]];
  for (const p of parts.slice(2)) {
    const chunk = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

function utcTime(date) {
  const s = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const text = `${s.slice(2, 4)}${s.slice(5, 7)}${s.slice(8, 10)}${s.slice(11, 13)}${s.slice(14, 16)}${s.slice(17, 19)}Z`;
  return tlv(0x17, Buffer.from(text, 'ascii'));
}

const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'));

function name(cn, organization = 'otahub-bench') {
  return seq(set(seq(oid('2.5.4.10'), utf8(organization))), set(seq(oid('2.5.4.3'), utf8(cn))));
}

function extension(id, critical, value) {
  return critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value));
}

/** SHA-1 of the public key bits: OpenSSL's `subjectKeyIdentifier = hash`. */
function keyId(spkiDer) {
  return crypto.createHash('sha1').update(spkiDer.subarray(spkiDer.length - 65)).digest();
}

function toPem(der, label = 'CERTIFICATE') {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/** Signs a TBSCertificate with `issuerKey` and returns the PEM certificate. */
function certificate({ subject, issuer, spki, issuerKey, notBefore, notAfter, extensions }) {
  const tbs = seq(
    explicit(0, int(2)),
    int(Buffer.concat([Buffer.from([0x01]), crypto.randomBytes(15)])),
    ECDSA_SHA256,
    issuer,
    seq(utcTime(notBefore), utcTime(notAfter)),
    subject,
    spki,
    explicit(3, seq(...extensions)),
  );
  const signature = crypto.sign('sha256', tbs, issuerKey);
  return toPem(seq(tbs, ECDSA_SHA256, bits(signature)));
}

function newKey() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey, spki: publicKey.export({ type: 'spki', format: 'der' }) };
}

const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;

/**
 * A device CA. Duck-types the parts of tests/e2e/lib/pki.js TestCa that DeviceFixture.registerCa
 * uses (name, base64, certPem, issueVerification, issueLeaf).
 */
class BenchCa {
  constructor(cn = 'otahub bench device CA') {
    this.name = cn;
    const { privateKey, spki } = newKey();
    this.key = privateKey;
    this.subject = name(cn);
    this.keyId = keyId(spki);
    const now = Date.now();
    this.certPem = certificate({
      subject: this.subject,
      issuer: this.subject,
      spki,
      issuerKey: privateKey,
      notBefore: new Date(now - HOUR),
      notAfter: new Date(now + 365 * DAY),
      extensions: [
        extension('2.5.29.19', true, seq(bool(true))),
        extension('2.5.29.15', true, bits(Buffer.from([0x86]), 1)), // digitalSignature, keyCertSign, cRLSign
        extension('2.5.29.14', false, octets(this.keyId)),
      ],
    });
    this.base64 = Buffer.from(this.certPem).toString('base64');
  }

  _leaf(cn, extraExtensions, keyUsage = true) {
    const { privateKey, spki } = newKey();
    const now = Date.now();
    const extensions = [extension('2.5.29.19', true, seq())];
    // digitalSignature, keyEncipherment
    if (keyUsage) extensions.push(extension('2.5.29.15', true, bits(Buffer.from([0xa0]), 5)));
    extensions.push(...extraExtensions,
      extension('2.5.29.14', false, octets(keyId(spki))),
      extension('2.5.29.35', false, seq(tlv(0x80, this.keyId))));
    const certPem = certificate({
      subject: name(cn),
      issuer: this.subject,
      spki,
      issuerKey: this.key,
      notBefore: new Date(now - HOUR),
      notAfter: new Date(now + 7 * DAY),
      extensions,
    });
    const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' });
    return { name: cn, certPem, keyPem, chainPem: certPem };
  }

  /** A device certificate; eku 'client' (default) or 'server' (the trust probe of DeviceFixture). */
  issueLeaf({ cn = 'device-1', eku = 'client' } = {}) {
    const purpose = eku === 'server' ? '1.3.6.1.5.5.7.3.1' : '1.3.6.1.5.5.7.3.2';
    return this._leaf(cn, [extension('2.5.29.37', false, seq(oid(purpose)))]);
  }

  /** The proof-of-possession certificate: SAN URI urn:nerveshub:verify:<token>. */
  issueVerification(token) {
    const san = seq(tlv(0x86, Buffer.from(`urn:nerveshub:verify:${token}`, 'ascii')));
    const leaf = this._leaf('verification', [extension('2.5.29.17', false, san)]);
    return { ...leaf, base64: Buffer.from(leaf.certPem).toString('base64') };
  }
}

module.exports = { BenchCa };
