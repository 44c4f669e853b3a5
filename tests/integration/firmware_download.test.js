'use strict';
// Firmware downloads: the authenticated admin download and the signed device URL
// (/firmware/<org_id>/<uuid>.fw?expires=&signature=), with Range, If-Range, HEAD, ETag,
// signature tampering and expiry.
const { test, before, after, describe } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { startHub } = require('../e2e/lib/hub');
const fw = require('./firmware_support');

const NAME = 'demo-2.0.0.fw'; // 1.5 MB: two 1 MiB partial checksums
const FILE = fw.fixture(NAME);
const EXP = fw.expected()[NAME];
const UUID = EXP.metadata['meta-uuid'];

/** The device URL as otahub signs it (otahub-firmware-url-v1). */
function signedPath(secret, orgId, uuid, expires) {
  const urlPath = `/firmware/${orgId}/${uuid}.fw`;
  const signature = crypto.createHmac('sha256', secret)
    .update(`otahub-firmware-url-v1\n${urlPath}\n${expires}`).digest('base64url');
  return `${urlPath}?expires=${expires}&signature=${signature}`;
}

describe('firmware download', () => {
  let hub;
  let token;
  let orgId;
  let secret;
  const now = () => Math.floor(Date.now() / 1000);

  before(async () => {
    hub = await startHub();
    token = await fw.setupOrg(hub);
    const res = await fw.uploadMultipart(hub, token, 'demo', FILE);
    assert.equal(res.status, 201, res.body.toString());
    orgId = fs.readdirSync(path.join(hub.env.OTAHUB_DATA_DIR, 'firmware'))[0];
    secret = hub.env.OTAHUB_SECRET_KEY;
  });
  after(async () => { if (hub) await hub.stop(); });

  const url = (p) => `${hub.apiUrl}${p}`;
  const good = () => url(signedPath(secret, orgId, UUID, now() + 3600));

  test('authenticated download streams the exact file with an ETag', async () => {
    const res = await fw.send(url(`${fw.firmwaresPath('acme', 'demo')}/${UUID}/download`),
      { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
    assert.ok(res.body.equals(FILE));
    assert.equal(res.headers['content-length'], String(FILE.length));
    assert.equal(res.headers['content-type'], 'application/octet-stream');
    assert.equal(res.headers.etag, `"${EXP.sha256}"`);
    assert.equal(res.headers['accept-ranges'], 'bytes');
    const anon = await fw.send(url(`${fw.firmwaresPath('acme', 'demo')}/${UUID}/download`));
    assert.equal(anon.status, 401);
    const part = await fw.send(url(`${fw.firmwaresPath('acme', 'demo')}/${UUID}/download`),
      { headers: { authorization: `Bearer ${token}`, range: 'bytes=10-19' } });
    assert.equal(part.status, 206);
    assert.ok(part.body.equals(FILE.subarray(10, 20)));
  });

  test('signed URL: full GET without credentials, byte-exact', async () => {
    const res = await fw.send(good());
    assert.equal(res.status, 200);
    assert.ok(res.body.equals(FILE));
    assert.equal(fw.sha256(res.body), EXP.sha256);
    assert.equal(res.headers['content-length'], String(FILE.length));
    assert.equal(res.headers['accept-ranges'], 'bytes');
    assert.equal(res.headers.etag, `"${EXP.sha256}"`);
  });

  test('Range: 206 bodies are byte-exact with the right Content-Range', async () => {
    const size = FILE.length;
    const cases = [
      ['bytes=0-99', 0, 99],
      ['bytes=1048576-', 1048576, size - 1],
      ['bytes=-100', size - 100, size - 1],
      ['bytes=1000-1000', 1000, 1000],
      [`bytes=${size - 10}-${size + 1000}`, size - 10, size - 1],
      ['bytes=0-9,10-19', 0, 19],
    ];
    for (const [range, first, last] of cases) {
      const res = await fw.send(good(), { headers: { range } });
      assert.equal(res.status, 206, range);
      assert.equal(res.headers['content-range'], `bytes ${first}-${last}/${size}`, range);
      assert.equal(res.headers['content-length'], String(last - first + 1), range);
      assert.ok(res.body.equals(FILE.subarray(first, last + 1)), range);
    }
  });

  test('Range: a resumed download in three pieces reassembles the file', async () => {
    const pieces = [];
    let offset = 0;
    for (const end of [400000, 1048576 + 17, FILE.length - 1]) {
      const res = await fw.send(good(), { headers: { range: `bytes=${offset}-${end}`, 'if-range': `"${EXP.sha256}"` } });
      assert.equal(res.status, 206);
      pieces.push(res.body);
      offset = end + 1;
    }
    assert.equal(fw.sha256(Buffer.concat(pieces)), EXP.sha256);
  });

  test('Range: 416 for unsatisfiable ranges, ignored when invalid or disjoint', async () => {
    const size = FILE.length;
    for (const range of [`bytes=${size}-`, `bytes=${size + 5}-${size + 10}`, 'bytes=-0']) {
      const res = await fw.send(good(), { headers: { range } });
      assert.equal(res.status, 416, range);
      assert.equal(res.headers['content-range'], `bytes */${size}`);
    }
    for (const range of ['bytes=5-1', 'bytes=abc', 'pages=1-2', 'bytes=0-9,100-109']) {
      const res = await fw.send(good(), { headers: { range } });
      assert.equal(res.status, 200, range);
      assert.equal(res.body.length, size);
    }
  });

  test('If-Range: the current ETag keeps the range, anything else gets the whole file', async () => {
    const match = await fw.send(good(), { headers: { range: 'bytes=0-9', 'if-range': `"${EXP.sha256}"` } });
    assert.equal(match.status, 206);
    assert.ok(match.body.equals(FILE.subarray(0, 10)));
    for (const ifRange of ['"0000"', `W/"${EXP.sha256}"`, 'Tue, 01 Dec 2026 10:00:00 GMT']) {
      const res = await fw.send(good(), { headers: { range: 'bytes=0-9', 'if-range': ifRange } });
      assert.equal(res.status, 200, ifRange);
      assert.ok(res.body.equals(FILE));
    }
  });

  test('HEAD: headers of the GET, no body', async () => {
    const head = await fw.send(good(), { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(FILE.length));
    assert.equal(head.headers['accept-ranges'], 'bytes');
    assert.equal(head.headers.etag, `"${EXP.sha256}"`);
    assert.equal(head.body.length, 0);
    const ranged = await fw.send(good(), { method: 'HEAD', headers: { range: 'bytes=0-9' } });
    assert.equal(ranged.status, 206);
    assert.equal(ranged.headers['content-length'], '10');
    assert.equal(ranged.body.length, 0);
    const bad = await fw.send(url(signedPath('wrong', orgId, UUID, now() + 60)), { method: 'HEAD' });
    assert.equal(bad.status, 403);
  });

  test('tampered or expired signatures are 403', async () => {
    const expires = now() + 3600;
    const valid = signedPath(secret, orgId, UUID, expires);
    const sig = new URL(valid, 'http://x').searchParams.get('signature');
    const flipped = sig[0] === 'A' ? `B${sig.slice(1)}` : `A${sig.slice(1)}`;
    const cases = [
      ['other secret', signedPath('not the secret', orgId, UUID, expires)],
      ['flipped signature', valid.replace(sig, flipped)],
      ['longer expiry', valid.replace(`expires=${expires}`, `expires=${expires + 1}`)],
      ['another org', `/firmware/${Number(orgId) + 1}/${UUID}.fw?expires=${expires}&signature=${sig}`],
      ['no signature', `/firmware/${orgId}/${UUID}.fw?expires=${expires}`],
      ['no expiry', `/firmware/${orgId}/${UUID}.fw?signature=${sig}`],
      ['expired', signedPath(secret, orgId, UUID, now() - 5)],
    ];
    for (const [label, p] of cases) {
      const res = await fw.send(url(p));
      assert.equal(res.status, 403, label);
      assert.equal(res.body.length > 0 && res.json.errors.detail.length > 0, true, label);
    }
    const expired = await fw.send(url(signedPath(secret, orgId, UUID, now() - 5)));
    assert.match(expired.json.errors.detail, /expired/);
  });

  test('a valid signature for firmware that is gone is a 404; bad paths are 404', async () => {
    const missing = '00000000-0000-5000-8000-000000000000';
    assert.equal((await fw.send(url(signedPath(secret, orgId, missing, now() + 60)))).status, 404);
    assert.equal((await fw.send(url(`/firmware/${orgId}/not-a-uuid.fw?expires=1&signature=x`))).status, 404);
    assert.equal((await fw.send(url(`/firmware/abc/${UUID}.fw?expires=1&signature=x`))).status, 404);
    assert.equal((await fw.send(url(`/firmware/${orgId}/${UUID}.zip?expires=1&signature=x`))).status, 404);
  });

  test('a firmware larger than the hub\'s 2 MiB file window: whole and ranged bodies are byte-exact', async () => {
    // The hub sends a file from mappings of 2 MiB at a time (http_server.cpp): this archive spans
    // four of them, and the ranges start and end off page and window boundaries.
    const archive = fw.archiveWithResource('7.0.0', 6 * 1048576 + 12345);
    const up = await fw.uploadRaw(hub, token, 'demo', archive);
    assert.equal(up.status, 201, up.body.toString());
    const uuid = up.json.data.uuid;
    const signed = () => url(signedPath(secret, orgId, uuid, now() + 3600));
    const whole = await fw.send(signed());
    assert.equal(whole.status, 200);
    assert.equal(whole.body.length, archive.length);
    assert.ok(whole.body.equals(archive), 'whole body differs from the uploaded archive');
    const window = 2 * 1048576;
    const cases = [
      [1, window - 1], // inside the first window, unaligned start
      [window - 7, window + 4100], // across the first window boundary
      [window + 4095, 3 * window + 1], // a page boundary off by one, two windows crossed
      [4097, archive.length - 1], // to the end from an unaligned start
      [archive.length - 3, archive.length - 1],
    ];
    for (const [first, last] of cases) {
      const res = await fw.send(signed(), { headers: { range: `bytes=${first}-${last}` } });
      assert.equal(res.status, 206, `${first}-${last}`);
      assert.equal(res.headers['content-range'], `bytes ${first}-${last}/${archive.length}`);
      assert.ok(res.body.equals(archive.subarray(first, last + 1)), `${first}-${last}`);
    }
  });

  test('throughput of a signed download (reported, not asserted)', async (t) => {
    const rounds = 20;
    const started = process.hrtime.bigint();
    for (let i = 0; i < rounds; i++) {
      const res = await fw.send(good());
      assert.equal(res.body.length, FILE.length);
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const mbps = (rounds * FILE.length) / seconds / 1e6;
    t.diagnostic(`signed download: ${mbps.toFixed(1)} MB/s over ${rounds} x ${FILE.length} bytes`);
  });
});
