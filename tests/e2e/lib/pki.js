'use strict';
// A throwaway test PKI made with the openssl CLI: root and intermediate CAs, device leaves with
// any validity window and EKU, same-key rotations, and CA-registration verification
// certificates. Every CA keeps an `openssl ca` database in its own directory.
//
//   const pki = new TestPki();                       // temp dir, removed by pki.cleanup()
//   const root = pki.root('Device Root');
//   const leaf = root.issueLeaf({ cn: 'device-1' });  // {certPem, keyPem, chainPem, serial, ...}
//   const ver = root.issueVerification(token);       // SAN URI urn:nerveshub:verify:<token>
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const DAY_MS = 24 * 3600 * 1000;

function openssl(args, cwd) {
  return execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/** OpenSSL's GeneralizedTime text for a Date (YYYYMMDDHHMMSSZ). */
function asn1Time(date) {
  return date.toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z');
}

function newKey(file) {
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file]);
  return file;
}

/** Upper-case hex SHA-1 of a certificate's DER, as the hub stores `fingerprint`. */
function fingerprintOf(certPem) {
  return new crypto.X509Certificate(certPem).fingerprint.replace(/:/g, '');
}

/** Decimal serial of a certificate, as the hub stores it. */
function serialOf(certPem) {
  return BigInt(`0x${new crypto.X509Certificate(certPem).serialNumber}`).toString(10);
}

function extensionsFor({ ca = false, pathLen, ski = true, aki = true, eku = 'client', sanUris = [] }) {
  const lines = [];
  if (ca) {
    lines.push(`basicConstraints = critical, CA:TRUE${pathLen === undefined ? '' : `, pathlen:${pathLen}`}`);
    lines.push('keyUsage = critical, keyCertSign, cRLSign, digitalSignature');
  } else {
    lines.push('basicConstraints = critical, CA:FALSE');
    lines.push('keyUsage = critical, digitalSignature, keyEncipherment');
    if (eku === 'client') lines.push('extendedKeyUsage = clientAuth');
    else if (eku === 'server') lines.push('extendedKeyUsage = serverAuth');
    else if (eku === 'both') lines.push('extendedKeyUsage = clientAuth, serverAuth');
  }
  lines.push(`subjectKeyIdentifier = ${ski ? 'hash' : 'none'}`);
  lines.push(`authorityKeyIdentifier = ${aki ? 'keyid:always' : 'none'}`);
  if (sanUris.length) lines.push(`subjectAltName = ${sanUris.map((u) => `URI:${u}`).join(', ')}`);
  return `[ext]\n${lines.join('\n')}\n`;
}

function subjectOf(cn, organization = 'otahub-test') {
  const escape = (s) => s.replace(/[/\\]/g, (c) => `\\${c}`);
  return `/O=${escape(organization)}${cn ? `/CN=${escape(cn)}` : ''}`;
}

class Issued {
  constructor(dir, name, certFile, keyFile, issuer) {
    this.dir = dir;
    this.name = name;
    this.certFile = certFile;
    this.keyFile = keyFile;
    this.issuer = issuer;
    this.certPem = fs.readFileSync(certFile, 'utf8');
    this.keyPem = fs.readFileSync(keyFile, 'utf8');
    this.serial = serialOf(this.certPem);
    this.fingerprint = fingerprintOf(this.certPem);
  }

  /** Intermediates above this certificate (nearest first), excluding the root, as PEM. */
  get intermediatesPem() {
    let pem = '';
    for (let ca = this.issuer; ca && ca.issuer; ca = ca.issuer) pem += ca.certPem;
    return pem;
  }

  /** This certificate followed by its intermediates: what a device sends. */
  get chainPem() {
    return this.certPem + this.intermediatesPem;
  }

  /** Base64 of the PEM: the `{"cert": ...}` value of the REST API. */
  get base64() {
    return Buffer.from(this.certPem).toString('base64');
  }
}

class TestCa extends Issued {
  constructor(dir, name, certFile, keyFile, issuer, hasSki = true) {
    super(dir, name, certFile, keyFile, issuer);
    this.hasSki = hasSki;
    this.dbDir = path.join(dir, `${name}.ca`);
    fs.mkdirSync(path.join(this.dbDir, 'new'), { recursive: true });
    fs.writeFileSync(path.join(this.dbDir, 'index.txt'), '');
    fs.writeFileSync(path.join(this.dbDir, 'serial'), `${crypto.randomBytes(8).toString('hex')}\n`);
    fs.writeFileSync(path.join(this.dbDir, 'ca.cnf'), [
      '[ca]', 'default_ca = default', '[default]',
      `dir = ${this.dbDir}`, 'database = $dir/index.txt', 'new_certs_dir = $dir/new', 'serial = $dir/serial',
      'default_md = sha256', 'policy = any', 'unique_subject = no', 'email_in_dn = no',
      'copy_extensions = none', '[any]', 'commonName = optional', 'organizationName = optional', '',
    ].join('\n'));
    this._count = 0;
  }

  _sign(name, { cn, organization, keyFile, notBefore, notAfter, ext }) {
    const base = path.join(this.dir, name);
    const key = keyFile || newKey(`${base}.key`);
    if (keyFile && keyFile !== `${base}.key`) fs.copyFileSync(keyFile, `${base}.key`);
    openssl(['req', '-new', '-key', key, '-subj', subjectOf(cn, organization), '-out', `${base}.csr`]);
    // An issuer without a Subject Key Identifier cannot be named by an AKI.
    fs.writeFileSync(`${base}.ext`, this.hasSki ? ext : ext.replace(/authorityKeyIdentifier = .*/, 'authorityKeyIdentifier = none'));
    openssl(['ca', '-batch', '-config', path.join(this.dbDir, 'ca.cnf'), '-cert', this.certFile,
      '-keyfile', this.keyFile, '-in', `${base}.csr`, '-out', `${base}.crt`, '-notext',
      '-rand_serial', '-startdate', asn1Time(notBefore), '-enddate', asn1Time(notAfter),
      '-extfile', `${base}.ext`, '-extensions', 'ext', '-subj', subjectOf(cn, organization)]);
    return { certFile: `${base}.crt`, keyFile: `${base}.key` };
  }

  _uniqueName(prefix) {
    this._count += 1;
    return `${this.name}-${prefix}-${this._count}`.replace(/[^A-Za-z0-9_.-]/g, '_');
  }

  /**
   * Issues a device (end-entity) certificate. Options: cn ('device-1'), eku ('client' | 'server'
   * | 'both' | 'none'), notBefore / notAfter (Dates; default now-1h .. now+1d), key (an Issued or
   * key file to reuse: same-key rotation), ski, aki, organization.
   */
  issueLeaf({ cn = 'device-1', eku = 'client', notBefore, notAfter, key, ski = true, aki = true,
    organization } = {}) {
    const name = this._uniqueName(`leaf-${cn || 'nocn'}`);
    const now = Date.now();
    const files = this._sign(name, {
      cn,
      organization,
      keyFile: key ? (typeof key === 'string' ? key : key.keyFile) : undefined,
      notBefore: notBefore || new Date(now - 3600 * 1000),
      notAfter: notAfter || new Date(now + DAY_MS),
      ext: extensionsFor({ eku, ski, aki }),
    });
    return new Issued(this.dir, name, files.certFile, files.keyFile, this);
  }

  /** Issues a subordinate CA. Options: notBefore, notAfter, ski, pathLen. */
  issueCa(cn, { notBefore, notAfter, ski = true, pathLen } = {}) {
    const name = this._uniqueName(`ca-${cn}`);
    const now = Date.now();
    const files = this._sign(name, {
      cn,
      notBefore: notBefore || new Date(now - DAY_MS),
      notAfter: notAfter || new Date(now + 365 * DAY_MS),
      ext: extensionsFor({ ca: true, ski, pathLen }),
    });
    return new TestCa(this.dir, name, files.certFile, files.keyFile, this, ski);
  }

  /**
   * The proof-of-possession certificate for CA registration: SAN URI
   * `urn:nerveshub:verify:<token>` (placement 'san', default) or subject CN = token ('cn').
   */
  issueVerification(token, { placement = 'san', notBefore, notAfter } = {}) {
    const name = this._uniqueName('verification');
    const now = Date.now();
    const files = this._sign(name, {
      cn: placement === 'cn' ? token : 'verification',
      notBefore: notBefore || new Date(now - 3600 * 1000),
      notAfter: notAfter || new Date(now + DAY_MS),
      ext: extensionsFor({
        eku: 'none',
        sanUris: placement === 'san' ? [`urn:nerveshub:verify:${token}`] : [],
      }),
    });
    return new Issued(this.dir, name, files.certFile, files.keyFile, this);
  }
}

class TestPki {
  constructor(dir) {
    this.dir = dir || fs.mkdtempSync(path.join(os.tmpdir(), 'otahub-pki-'));
    this._roots = 0;
  }

  /** A self-signed root CA. Options: notBefore, notAfter, ski (default true), ca (default true). */
  root(cn = 'Device Root', { notBefore, notAfter, ski = true, ca = true } = {}) {
    this._roots += 1;
    const name = `root${this._roots}-${cn}`.replace(/[^A-Za-z0-9_.-]/g, '_');
    const base = path.join(this.dir, name);
    newKey(`${base}.key`);
    openssl(['req', '-new', '-key', `${base}.key`, '-subj', subjectOf(cn), '-out', `${base}.csr`]);
    fs.writeFileSync(`${base}.ext`, extensionsFor({ ca, ski, aki: false, eku: 'none' }));
    // x509 -req cannot backdate; a self-signed root valid from a minute ago is enough.
    const now = Date.now();
    const start = notBefore || new Date(now - 60 * 1000);
    const end = notAfter || new Date(now + 3650 * DAY_MS);
    const days = Math.max(1, Math.ceil((end - start) / DAY_MS));
    openssl(['x509', '-req', '-in', `${base}.csr`, '-signkey', `${base}.key`, '-days', String(days),
      '-extfile', `${base}.ext`, '-extensions', 'ext', '-set_serial',
      `0x${crypto.randomBytes(15).toString('hex')}`, '-out', `${base}.crt`]);
    return new TestCa(this.dir, name, `${base}.crt`, `${base}.key`, null, ski);
  }

  cleanup() {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

module.exports = { TestPki, TestCa, Issued, fingerprintOf, serialOf };
