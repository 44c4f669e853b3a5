'use strict';
// Helpers for the firmware integration tests: fixtures, multipart bodies, a small ZIP reader and
// writer for hand-made (hostile) archives, fwup-style Ed25519 signing, raw HTTP with binary
// bodies, and a look at what the hub left in its data directory.
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const zlib = require('node:zlib');

const FIXTURES = path.join(__dirname, '..', 'fixtures', 'fwup');

function fixture(name) {
  return fs.readFileSync(path.join(FIXTURES, name));
}

function expected() {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, 'expected.json'), 'utf8'));
}

function fixtureNames() {
  return fs.readdirSync(FIXTURES).filter((n) => n.endsWith('.fw')).sort();
}

function publicKey(name = 'signing.pub') {
  return fs.readFileSync(path.join(FIXTURES, name), 'utf8').trim();
}

/** Signs like `fwup -S`: Ed25519 over the exact meta.conf bytes with a fwup .priv file. */
function sign(data, keyName = 'signing.priv') {
  const raw = Buffer.from(fs.readFileSync(path.join(FIXTURES, keyName), 'utf8').trim(), 'base64');
  const seed = raw.subarray(0, 32);
  const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]);
  const key = crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  return crypto.sign(null, data, key);
}

/** A multipart/form-data body with text fields and one file part. */
function multipart(fields, file, { boundary = `----otahub${crypto.randomBytes(8).toString('hex')}`,
  fileField = 'firmware', filename = 'firmware.fw' } = {}) {
  const chunks = [];
  for (const [name, value] of Object.entries(fields)) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`));
  }
  if (file) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${fileField}"; ` +
      `filename="${filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`));
    chunks.push(file);
    chunks.push(Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

/**
 * Raw HTTP request with a binary body; resolves {status, headers, body (Buffer), json}.
 * `chunked: true` sends the body without a Content-Length.
 */
function send(url, { method = 'GET', headers = {}, body, chunked = false } = {}) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (body !== undefined && !chunked) h['content-length'] = body.length;
    let responded = false;
    const req = http.request(url, { method, headers: h, agent: false }, (res) => {
      responded = true;
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => {
        const buf = Buffer.concat(parts);
        let json = null;
        try { json = JSON.parse(buf.toString()); } catch (_) { json = null; }
        resolve({ status: res.statusCode, headers: res.headers, body: buf, json });
      });
      res.on('error', reject);
    });
    req.on('error', (err) => {
      // The hub may answer (413/507) and close before the whole body is sent; the answer
      // usually arrives anyway. If the reset destroyed it, report status 0.
      if (err.code === 'EPIPE' || err.code === 'ECONNRESET') return;
      reject(err);
    });
    req.on('close', () => {
      if (!responded) resolve({ status: 0, headers: {}, body: Buffer.alloc(0), json: null });
    });
    if (body !== undefined) {
      if (chunked) {
        for (let i = 0; i < body.length; i += 65536) req.write(body.subarray(i, i + 65536));
      } else {
        req.write(body);
      }
    }
    req.end();
  });
}

function firmwaresPath(org, product) {
  return `/api/orgs/${org}/products/${encodeURIComponent(product)}/firmwares`;
}

/** Uploads as NervesHub's CLI does (multipart field `firmware`), optional `ttl` form field. */
function uploadMultipart(hub, token, product, file, { ttl, org = 'acme', query = '' } = {}) {
  const fields = ttl === undefined ? {} : { ttl: String(ttl) };
  const { body, contentType } = multipart(fields, file);
  return send(`${hub.apiUrl}${firmwaresPath(org, product)}${query}`, {
    method: 'POST', body, headers: { authorization: `Bearer ${token}`, 'content-type': contentType },
  });
}

/** Uploads the archive as the raw request body. */
function uploadRaw(hub, token, product, file, { ttl, org = 'acme', chunked = false } = {}) {
  const query = ttl === undefined ? '' : `?ttl=${encodeURIComponent(ttl)}`;
  return send(`${hub.apiUrl}${firmwaresPath(org, product)}${query}`, {
    method: 'POST', body: file, chunked,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
  });
}

/** Logs in, creates products `demo` and `other`, registers signing.pub as key `prod`. */
async function setupOrg(hub, { key = true } = {}) {
  const token = await hub.login();
  for (const name of ['demo', 'other']) {
    const res = await hub.request('POST', '/api/orgs/acme/products', { token, body: { name } });
    if (res.status !== 201) throw new Error(`product ${name}: ${res.status} ${res.text}`);
  }
  if (key) {
    const res = await hub.request('POST', '/api/orgs/acme/keys',
      { token, body: { name: 'prod', key: publicKey() } });
    if (res.status !== 201) throw new Error(`key: ${res.status} ${res.text}`);
  }
  return token;
}

/** Every file under the hub's data directory, relative paths, sorted. */
function dataFiles(hub) {
  const root = hub.env.OTAHUB_DATA_DIR;
  const out = [];
  const walk = (dir) => {
    if (!fs.existsSync(dir)) return;
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else out.push(path.relative(root, full));
    }
  };
  walk(root);
  return out.sort();
}

// ---- ZIP: enough of the format to take fixtures apart and build hostile archives ----

/** Entries of a ZIP (central directory order): {name, data (uncompressed Buffer), time, date}. */
function readZip(buf) {
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65557); i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new Error('no end of central directory');
  const count = buf.readUInt16LE(eocd + 10);
  let at = buf.readUInt32LE(eocd + 16);
  const entries = [];
  for (let n = 0; n < count; n++) {
    if (buf.readUInt32LE(at) !== 0x02014b50) throw new Error('bad central directory');
    const method = buf.readUInt16LE(at + 10);
    const time = buf.readUInt16LE(at + 12);
    const date = buf.readUInt16LE(at + 14);
    const csize = buf.readUInt32LE(at + 20);
    const nameLen = buf.readUInt16LE(at + 28);
    const extraLen = buf.readUInt16LE(at + 30);
    const commentLen = buf.readUInt16LE(at + 32);
    const local = buf.readUInt32LE(at + 42);
    const name = buf.subarray(at + 46, at + 46 + nameLen).toString();
    const dataAt = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const raw = buf.subarray(dataAt, dataAt + csize);
    const data = method === 8 ? zlib.inflateRawSync(raw) : Buffer.from(raw);
    entries.push({ name, data, time, date });
    at += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

/**
 * Builds a ZIP. Entries: {name, data, deflate?, declaredSize?, time?, date?}; declaredSize lies
 * about the uncompressed size (for bomb tests).
 */
function writeZip(entries) {
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name);
    const data = e.deflate ? zlib.deflateRawSync(e.data) : e.data;
    const crc = zlib.crc32(e.data);
    const size = e.declaredSize === undefined ? e.data.length : e.declaredSize;
    const method = e.deflate ? 8 : 0;
    const time = e.time === undefined ? 0x5e7a : e.time;
    const date = e.date === undefined ? 0x5d77 : e.date;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0, 6);
    local.writeUInt16LE(method, 8);
    local.writeUInt16LE(time, 10);
    local.writeUInt16LE(date, 12);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(0x031e, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0, 8);
    central.writeUInt16LE(method, 10);
    central.writeUInt16LE(time, 12);
    central.writeUInt16LE(date, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(size, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(0o100644 * 0x10000, 38);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, data);
    centrals.push(central, name);
    offset += local.length + name.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8);
  eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, eocd]);
}

/** A signed archive with this meta.conf text and no resources. */
function signedArchive(metaConf, keyName = 'signing.priv') {
  const meta = Buffer.from(metaConf);
  return writeZip([
    { name: 'meta.conf.ed25519', data: sign(meta, keyName) },
    { name: 'meta.conf', data: meta },
  ]);
}

/**
 * A signed archive for product "demo" (rpi4, aarch64) at `version` with `bytes` random bytes as
 * file-resource rootfs.img (blake2b-256 from coreutils' b2sum), stored uncompressed.
 */
function archiveWithResource(version, bytes) {
  const data = crypto.randomBytes(bytes);
  const blake = execFileSync('b2sum', ['-l', '256'], { input: data }).toString().split(' ')[0];
  const meta = Buffer.from(`meta-product = "demo"\nmeta-version = "${version}"\n` +
    'meta-platform = "rpi4"\nmeta-architecture = "aarch64"\n' +
    `file-resource "rootfs.img" {\n  length = ${data.length}\n  blake2b-256 = "${blake}"\n}\n`);
  return writeZip([
    { name: 'meta.conf.ed25519', data: sign(meta) },
    { name: 'meta.conf', data: meta },
    { name: 'data/rootfs.img', data },
  ]);
}

/** demo-1.1.0.fw taken apart and put back together with `extra` entries appended. */
function demoWith(extra) {
  const entries = readZip(fixture('demo-1.1.0.fw')).map((e) => ({ ...e, deflate: true }));
  return writeZip([...entries, ...extra]);
}

function sha256(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex').toUpperCase();
}

module.exports = {
  FIXTURES, fixture, expected, fixtureNames, publicKey, sign, multipart, send, firmwaresPath,
  uploadMultipart, uploadRaw, setupOrg, dataFiles, readZip, writeZip, signedArchive, demoWith,
  archiveWithResource, sha256,
};
