'use strict';
// Firmware upload through the REST API: every fwup fixture, multipart and raw bodies, TTL input,
// hostile archives, size limits, duplicates and concurrent uploads, and that refused uploads
// leave nothing behind on disk or in the database.
const { test, before, after, describe } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { startHub } = require('../e2e/lib/hub');
const fw = require('./firmware_support');

const expected = fw.expected();

// What each fixture must produce when only signing.pub is registered: 201, or 422 + check.
const OUTCOMES = {
  'demo-1.0.0.fw': 201,
  'demo-1.1.0-bbb.fw': 201,
  'demo-1.1.0.fw': 201,
  'demo-2.0.0.fw': 201,
  'demo-2.1.0-rc.1.fw': 201,
  'other-1.0.0.fw': 201,
  'demo-1.1.0.unsigned.fw': 'signature',
  'demo-1.1.0.other-key.fw': 'signature',
  'demo-1.1.0.tampered.fw': 'resource',
  'not-a-zip.fw': 'zip',
  'truncated.fw': 'zip',
};

function assertRefused(res, check) {
  assert.equal(res.status, 422, res.body.toString());
  assert.ok(res.json && res.json.errors, res.body.toString());
  assert.match(res.json.errors.detail, new RegExp(`\\b${check} check\\b`));
  assert.ok(Array.isArray(res.json.errors.firmware), res.body.toString());
  assert.match(res.json.errors.firmware[0], new RegExp(`^${check}: `));
}

function onlyStored(hub, uuids) {
  const files = fw.dataFiles(hub);
  const stored = files.filter((f) => f.startsWith('firmware/'));
  const others = files.filter((f) => !f.startsWith('firmware/'));
  assert.deepEqual(others, [], `temporary files left: ${others}`);
  assert.deepEqual(stored.map((f) => path.basename(f, '.fw')).sort(), [...uuids].sort());
}

describe('firmware upload', () => {
  let hub;
  let token;

  before(async () => {
    hub = await startHub();
    token = await fw.setupOrg(hub);
  });
  after(async () => { if (hub) await hub.stop(); });

  test('every fixture has an expected outcome', () => {
    assert.deepEqual(Object.keys(OUTCOMES).sort(), fw.fixtureNames());
  });

  test('every fixture through the API (multipart): accepted ones recorded exactly', async () => {
    const accepted = [];
    for (const name of fw.fixtureNames()) {
      const exp = expected[name];
      const product = exp && exp.metadata ? exp.metadata['meta-product'] : 'demo';
      const res = await fw.uploadMultipart(hub, token, product, fw.fixture(name));
      if (OUTCOMES[name] === 201) {
        assert.equal(res.status, 201, `${name}: ${res.body}`);
        const d = res.json.data;
        const m = exp.metadata;
        assert.equal(d.uuid, m['meta-uuid'], name);
        assert.equal(d.product, m['meta-product']);
        assert.equal(d.version, m['meta-version']);
        assert.equal(d.platform, m['meta-platform']);
        assert.equal(d.architecture, m['meta-architecture']);
        assert.equal(d.author, m['meta-author']);
        assert.equal(d.description, m['meta-description']);
        assert.equal(d.misc, m['meta-misc']);
        assert.equal(d.vcs_identifier, m['meta-vcs-identifier']);
        assert.equal(d.creation_date, m['meta-creation-date']);
        assert.equal(d.size, exp.size);
        assert.equal(d.sha256, exp.sha256);
        assert.deepEqual(d.partial_sha256, exp.partials_sha256_1MiB);
        assert.equal(d.key, 'prod');
        assert.equal(d.tool, 'fwup');
        assert.equal(d.ttl, null);
        assert.equal(d.ttl_until, null);
        assert.match(d.inserted_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
        accepted.push(d.uuid);
        // Stored byte for byte.
        const stored = fs.readFileSync(path.join(hub.env.OTAHUB_DATA_DIR, 'firmware',
          fs.readdirSync(path.join(hub.env.OTAHUB_DATA_DIR, 'firmware'))[0], `${d.uuid}.fw`));
        assert.ok(stored.equals(fw.fixture(name)), `${name} stored differently`);
      } else {
        assertRefused(res, OUTCOMES[name]);
      }
    }
    onlyStored(hub, accepted);
    const demo = await hub.request('GET', fw.firmwaresPath('acme', 'demo'), { token });
    assert.equal(demo.status, 200);
    assert.deepEqual(demo.body.data.map((f) => f.version).sort(),
      ['1.0.0', '1.1.0', '1.1.0', '2.0.0', '2.1.0-rc.1']);
    const other = await hub.request('GET', fw.firmwaresPath('acme', 'other'), { token });
    assert.deepEqual(other.body.data.map((f) => f.uuid), [expected['other-1.0.0.fw'].metadata['meta-uuid']]);
  });

  test('the same archive again is a 409 and leaves the stored one alone', async () => {
    const before = fw.dataFiles(hub);
    const res = await fw.uploadMultipart(hub, token, 'demo', fw.fixture('demo-1.0.0.fw'));
    assert.equal(res.status, 409, res.body.toString());
    assert.deepEqual(res.json.errors.firmware, ['uuid: has already been taken']);
    assert.deepEqual(fw.dataFiles(hub), before);
  });

  test('get one, delete it (file removed), then 404', async () => {
    const uuid = expected['demo-1.0.0.fw'].metadata['meta-uuid'];
    const base = fw.firmwaresPath('acme', 'demo');
    const got = await hub.request('GET', `${base}/${uuid}`, { token });
    assert.equal(got.status, 200);
    assert.equal(got.body.data.version, '1.0.0');
    assert.equal((await hub.request('GET', `${base}/00000000-0000-5000-8000-000000000000`, { token })).status, 404);
    assert.equal((await hub.request('GET', `${fw.firmwaresPath('acme', 'other')}/${uuid}`, { token })).status, 404);
    const del = await hub.request('DELETE', `${base}/${uuid}`, { token });
    assert.equal(del.status, 204, del.text);
    assert.equal((await hub.request('GET', `${base}/${uuid}`, { token })).status, 404);
    assert.equal((await hub.request('DELETE', `${base}/${uuid}`, { token })).status, 404);
    assert.ok(!fw.dataFiles(hub).some((f) => f.includes(uuid)));
    // And it can be uploaded again, raw this time.
    const again = await fw.uploadRaw(hub, token, 'demo', fw.fixture('demo-1.0.0.fw'));
    assert.equal(again.status, 201, again.body.toString());
  });

  test('wrong product is refused by the product check', async () => {
    const before = fw.dataFiles(hub);
    const res = await fw.uploadMultipart(hub, token, 'demo', fw.fixture('other-1.0.0.fw'));
    assertRefused(res, 'product');
    assert.match(res.json.errors.firmware[0], /'other', not 'demo'/);
    assert.deepEqual(fw.dataFiles(hub), before);
  });

  test('missing metadata and a non-SemVer version are refused', async () => {
    const noPlatform = fw.signedArchive(
      'meta-product = "demo"\nmeta-version = "3.0.0"\nmeta-architecture = "aarch64"\n');
    assertRefused(await fw.uploadMultipart(hub, token, 'demo', noPlatform), 'metadata');
    const badVersion = fw.signedArchive('meta-product = "demo"\nmeta-version = "3.0"\n' +
      'meta-platform = "rpi4"\nmeta-architecture = "aarch64"\n');
    const res = await fw.uploadMultipart(hub, token, 'demo', badVersion);
    assertRefused(res, 'version');
    // The same shape with a good version is accepted: the refusals above are about the fields.
    const good = fw.signedArchive('meta-product = "demo"\nmeta-version = "3.0.0"\n' +
      'meta-platform = "rpi4"\nmeta-architecture = "aarch64"\n');
    const ok = await fw.uploadRaw(hub, token, 'demo', good);
    assert.equal(ok.status, 201, ok.body.toString());
    assert.equal(ok.json.data.author, '');
  });

  test('hostile archives are refused safely and leave nothing behind', async () => {
    const before = fw.dataFiles(hub);
    const cases = [
      ['zip slip', fw.demoWith([{ name: '../../../../tmp/otahub-zip-slip', data: Buffer.from('x') }]), 'layout'],
      ['zip slip inside data/', fw.demoWith([{ name: 'data/../../evil', data: Buffer.from('x') }]), 'layout'],
      ['absolute path', fw.demoWith([{ name: '/etc/otahub-evil', data: Buffer.from('x') }]), 'layout'],
      ['backslash', fw.demoWith([{ name: 'data\\..\\evil', data: Buffer.from('x') }]), 'layout'],
      ['duplicate meta.conf', fw.demoWith([{ name: 'meta.conf', data: Buffer.from('meta-product = "demo"\n') }]), 'layout'],
      ['declared bomb', fw.demoWith([{ name: 'data/bomb', data: Buffer.alloc(100000), deflate: true, declaredSize: 0xfffffff0 }]), 'size'],
      ['extra resource', fw.demoWith([{ name: 'data/extra', data: Buffer.from('not in meta.conf') }]), 'resource'],
      ['trailing garbage', Buffer.concat([fw.fixture('demo-1.1.0.fw'), Buffer.from('garbage')]), 'zip'],
    ];
    for (const [label, archive, check] of cases) {
      const res = await fw.uploadMultipart(hub, token, 'demo', archive);
      assert.equal(res.status, 422, `${label}: ${res.body}`);
      assert.match(res.json.errors.detail, new RegExp(`\\b${check} check\\b`), label);
    }
    assert.ok(!fs.existsSync('/tmp/otahub-zip-slip'));
    assert.deepEqual(fw.dataFiles(hub), before);
    assert.equal(hub.child.exitCode, null, 'the hub is still running');
  });

  test('ttl from the query or a form field; invalid ttl is a 422', async () => {
    const a = fw.signedArchive('meta-product = "demo"\nmeta-version = "4.0.0"\n' +
      'meta-platform = "rpi4"\nmeta-architecture = "aarch64"\n');
    const res = await fw.uploadRaw(hub, token, 'demo', a, { ttl: 3600 });
    assert.equal(res.status, 201, res.body.toString());
    assert.equal(res.json.data.ttl, 3600);
    const until = Date.parse(res.json.data.ttl_until);
    const inserted = Date.parse(res.json.data.inserted_at);
    assert.ok(Math.abs(until - inserted - 3600 * 1000) <= 1000, `${res.json.data.ttl_until}`);

    const b = fw.signedArchive('meta-product = "demo"\nmeta-version = "4.0.1"\n' +
      'meta-platform = "rpi4"\nmeta-architecture = "aarch64"\n');
    const form = await fw.uploadMultipart(hub, token, 'demo', b, { ttl: 60 });
    assert.equal(form.status, 201, form.body.toString());
    assert.equal(form.json.data.ttl, 60);

    const before = fw.dataFiles(hub);
    for (const ttl of ['0', '-5', 'abc', '1.5', '99999999999999999999']) {
      const bad = await fw.uploadMultipart(hub, token, 'demo', fw.fixture('demo-2.0.0.fw'), { ttl });
      assert.equal(bad.status, 422, `ttl ${ttl}: ${bad.body}`);
      assert.ok(bad.json.errors.ttl, bad.body.toString());
    }
    assert.deepEqual(fw.dataFiles(hub), before);
  });

  test('malformed or empty bodies', async () => {
    const url = `${hub.apiUrl}${fw.firmwaresPath('acme', 'demo')}`;
    const auth = { authorization: `Bearer ${token}` };
    const empty = await fw.send(url, { method: 'POST', body: Buffer.alloc(0), headers: { ...auth, 'content-type': 'application/octet-stream' } });
    assert.equal(empty.status, 422);
    assert.deepEqual(empty.json.errors.firmware, ["can't be blank"]);
    const noPart = fw.multipart({ ttl: '5' }, null);
    const missing = await fw.send(url, { method: 'POST', body: noPart.body, headers: { ...auth, 'content-type': noPart.contentType } });
    assert.equal(missing.status, 422);
    assert.deepEqual(missing.json.errors.firmware, ["can't be blank"]);
    const wrongField = fw.multipart({}, fw.fixture('demo-1.1.0.fw'), { fileField: 'file' });
    const wrong = await fw.send(url, { method: 'POST', body: wrongField.body, headers: { ...auth, 'content-type': wrongField.contentType } });
    assert.equal(wrong.status, 422);
    const cut = fw.multipart({}, fw.fixture('demo-1.1.0.fw'));
    const truncated = await fw.send(url, { method: 'POST', body: cut.body.subarray(0, 5000), headers: { ...auth, 'content-type': cut.contentType } });
    assert.equal(truncated.status, 400);
    assert.match(truncated.json.errors.detail, /malformed multipart/);
    const noBoundary = await fw.send(url, { method: 'POST', body: cut.body, headers: { ...auth, 'content-type': 'multipart/form-data' } });
    assert.equal(noBoundary.status, 400);
    assert.equal(fw.dataFiles(hub).filter((f) => !f.startsWith('firmware/')).length, 0);
  });

  test('authorization: 401 without a token, 404 for non-members, 403 for viewers', async () => {
    const archive = fw.fixture('demo-2.1.0-rc.1.fw');
    const url = `${hub.apiUrl}${fw.firmwaresPath('acme', 'demo')}`;
    const anon = await fw.send(url, { method: 'POST', body: archive, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(anon.status, 401);
    const add = await hub.request('POST', '/api/orgs/acme/users', {
      token, body: { email: 'viewer@example.com', role: 'view', name: 'V', password: 'viewer password 1' },
    });
    assert.equal(add.status, 201, add.text);
    const viewer = await hub.login('viewer@example.com', 'viewer password 1');
    const list = await hub.request('GET', fw.firmwaresPath('acme', 'demo'), { token: viewer });
    assert.equal(list.status, 200);
    const res = await fw.uploadRaw(hub, viewer, 'demo', fw.fixture('demo-1.1.0-bbb.fw'));
    assert.equal(res.status, 403);
    const uuid = list.body.data[0].uuid;
    assert.equal((await hub.request('DELETE', `${fw.firmwaresPath('acme', 'demo')}/${uuid}`, { token: viewer })).status, 403);
    const nope = await fw.uploadRaw(hub, token, 'demo', archive, { org: 'nonexistent' });
    assert.equal(nope.status, 404);
    const noProduct = await fw.uploadRaw(hub, token, 'missing-product', archive);
    assert.equal(noProduct.status, 404);
  });
});

describe('firmware upload: org without keys, size limit, concurrency', () => {
  let hub;
  let token;

  before(async () => {
    hub = await startHub({ env: { OTAHUB_FIRMWARE_MAX_SIZE: '200000' } });
    token = await fw.setupOrg(hub, { key: false });
  });
  after(async () => { if (hub) await hub.stop(); });

  test('without signing keys, signed firmware is refused and the error says why', async () => {
    const res = await fw.uploadMultipart(hub, token, 'demo', fw.fixture('demo-2.1.0-rc.1.fw'));
    assertRefused(res, 'signature');
    assert.match(res.json.errors.detail, /no signing keys/);
    const key = await hub.request('POST', '/api/orgs/acme/keys',
      { token, body: { name: 'prod', key: fw.publicKey() } });
    assert.equal(key.status, 201);
  });

  test('too large: 413 from the declared length and from a chunked body; nothing left', async () => {
    const big = fw.fixture('demo-1.1.0.fw'); // 300955 bytes > 200000
    const declared = await fw.uploadRaw(hub, token, 'demo', big);
    assert.equal(declared.status, 413);
    const chunked = await fw.uploadRaw(hub, token, 'demo', big, { chunked: true });
    assert.equal(chunked.status, 413);
    const multi = await fw.uploadMultipart(hub, token, 'demo', big);
    assert.equal(multi.status, 413);
    assert.deepEqual(fw.dataFiles(hub), []);
    const small = await fw.uploadMultipart(hub, token, 'demo', fw.fixture('demo-1.1.0-bbb.fw'));
    assert.equal(small.status, 201, small.body.toString());
  });

  test('concurrent uploads of one archive: exactly one 201, the others 409', async () => {
    const archive = fw.fixture('demo-2.1.0-rc.1.fw');
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2
      ? fw.uploadRaw(hub, token, 'demo', archive)
      : fw.uploadMultipart(hub, token, 'demo', archive))));
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [201, 409, 409, 409, 409, 409, 409, 409], results.map((r) => r.body.toString()).join('\n'));
    onlyStored(hub, [expected['demo-2.1.0-rc.1.fw'].metadata['meta-uuid'], expected['demo-1.1.0-bbb.fw'].metadata['meta-uuid']]);
    const list = await hub.request('GET', fw.firmwaresPath('acme', 'demo'), { token });
    assert.equal(list.body.data.length, 2);
  });
});

describe('firmware upload: disk full', () => {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  let mountDir;
  let hub;
  let token;

  before(async () => {
    if (!isRoot) return;
    mountDir = fs.mkdtempSync(path.join(os.tmpdir(), 'otahub-full-'));
    // 2 MiB: a 1.5 MB upload spools, but copying its multipart part out does not fit.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mountDir]);
    hub = await startHub({ env: { OTAHUB_DATA_DIR: path.join(mountDir, 'data') } });
    token = await fw.setupOrg(hub);
  });
  after(async () => {
    if (hub) await hub.stop();
    if (mountDir) {
      try { execFileSync('umount', [mountDir]); } catch (_) { /* reported by the tests */ }
      fs.rmSync(mountDir, { recursive: true, force: true });
    }
  });

  test('507 when the part copy hits ENOSPC, 507 when spooling does; nothing left; raw fits',
    { skip: isRoot ? false : 'needs root to mount a small tmpfs' }, async () => {
      const archive = fw.fixture('demo-2.0.0.fw'); // 1501321 bytes
      const multi = await fw.uploadMultipart(hub, token, 'demo', archive);
      assert.equal(multi.status, 507, multi.body.toString());
      assert.match(multi.json.errors.detail, /no space/);
      assert.deepEqual(fw.dataFiles(hub), []);
      // Two bodies at once cannot both spool in 2 MiB: one of them fails while spooling.
      const both = await Promise.all([
        fw.uploadRaw(hub, token, 'demo', archive, { chunked: true }),
        fw.uploadRaw(hub, token, 'demo', archive, { chunked: true }),
      ]);
      assert.ok(both.some((r) => r.status === 507), both.map((r) => r.status).join(','));
      assert.ok(both.every((r) => r.status === 507 || r.status === 201 || r.status === 409),
        both.map((r) => `${r.status} ${r.body}`).join('\n'));
      // A single raw upload is published with a hard link: it needs no second copy.
      const stored = both.some((r) => r.status === 201);
      if (!stored) {
        const raw = await fw.uploadRaw(hub, token, 'demo', archive);
        assert.equal(raw.status, 201, raw.body.toString());
      }
      onlyStored(hub, [expected['demo-2.0.0.fw'].metadata['meta-uuid']]);
    });
});
