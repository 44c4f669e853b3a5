'use strict';
// Org signing keys: create/list/get/delete, validation, duplicates, roles, and that a key
// which signed stored firmware cannot be deleted until that firmware is gone.
const { test, before, after, describe } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { startHub } = require('../e2e/lib/hub');
const fw = require('./firmware_support');

describe('signing keys', () => {
  let hub;
  let token;

  before(async () => {
    hub = await startHub();
    token = await fw.setupOrg(hub, { key: false });
  });
  after(async () => { if (hub) await hub.stop(); });

  const keys = '/api/orgs/acme/keys';

  test('create, list and get a key (NervesHub shape, canonical base64)', async () => {
    const created = await hub.request('POST', keys,
      { token, body: { key: { name: 'prod', key: `  ${fw.publicKey()}\n` } } });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.body.data.name, 'prod');
    assert.equal(created.body.data.key, fw.publicKey());
    assert.equal(created.body.data.scheme, 'ed25519');
    const list = await hub.request('GET', keys, { token });
    assert.deepEqual(list.body.data.map((k) => k.name), ['prod']);
    const one = await hub.request('GET', `${keys}/prod`, { token });
    assert.equal(one.status, 200);
    assert.equal(one.body.data.key, fw.publicKey());
    assert.equal((await hub.request('GET', `${keys}/nope`, { token })).status, 404);
  });

  test('invalid keys and names are 422', async () => {
    const privateKey = require('node:fs').readFileSync(`${fw.FIXTURES}/signing.priv`, 'utf8').trim();
    const bad = [
      ['garbage', 'not base64 at all!'],
      ['31 bytes', crypto.randomBytes(31).toString('base64')],
      ['33 bytes', crypto.randomBytes(33).toString('base64')],
      ['private key file', privateKey],
      ['empty', ''],
    ];
    for (const [label, key] of bad) {
      const res = await hub.request('POST', keys, { token, body: { name: `k-${label}`, key } });
      assert.equal(res.status, 422, `${label}: ${res.text}`);
      assert.ok(res.body.errors.key, label);
    }
    for (const name of ['', 'a/b', 'x'.repeat(256)]) {
      const res = await hub.request('POST', keys, { token, body: { name, key: fw.publicKey('other.pub') } });
      assert.equal(res.status, 422, name);
      assert.ok(res.body.errors.name);
    }
    const scheme = await hub.request('POST', keys,
      { token, body: { name: 'rsa', key: fw.publicKey('other.pub'), scheme: 'rsa' } });
    assert.equal(scheme.status, 422);
    assert.equal((await hub.request('GET', keys, { token })).body.data.length, 1);
  });

  test('duplicate name or duplicate key value is 409', async () => {
    const sameName = await hub.request('POST', keys, { token, body: { name: 'prod', key: fw.publicKey('other.pub') } });
    assert.equal(sameName.status, 409);
    assert.deepEqual(sameName.body.errors.name, ['has already been taken']);
    const sameKey = await hub.request('POST', keys, { token, body: { name: 'copy', key: fw.publicKey() } });
    assert.equal(sameKey.status, 409);
    assert.deepEqual(sameKey.body.errors.key, ['has already been taken']);
  });

  test('viewers read, managers change; non-members see nothing', async () => {
    const add = await hub.request('POST', '/api/orgs/acme/users', {
      token, body: { email: 'viewer@example.com', role: 'view', name: 'V', password: 'viewer password 1' },
    });
    assert.equal(add.status, 201, add.text);
    const viewer = await hub.login('viewer@example.com', 'viewer password 1');
    assert.equal((await hub.request('GET', keys, { token: viewer })).status, 200);
    assert.equal((await hub.request('GET', `${keys}/prod`, { token: viewer })).status, 200);
    assert.equal((await hub.request('POST', keys, { token: viewer, body: { name: 'v', key: fw.publicKey('other.pub') } })).status, 403);
    assert.equal((await hub.request('DELETE', `${keys}/prod`, { token: viewer })).status, 403);
    assert.equal((await hub.request('GET', keys)).status, 401);
    const org = await hub.request('POST', '/api/orgs', { token: viewer, body: { name: 'viewers-own' } });
    assert.equal(org.status, 201, org.text);
    assert.equal((await hub.request('GET', '/api/orgs/viewers-own/keys', { token })).status, 404);
  });

  test('a key that signed stored firmware cannot be deleted until the firmware is gone', async () => {
    const up = await fw.uploadMultipart(hub, token, 'demo', fw.fixture('demo-1.1.0.fw'));
    assert.equal(up.status, 201, up.body.toString());
    assert.equal(up.json.data.key, 'prod');
    const refused = await hub.request('DELETE', `${keys}/prod`, { token });
    assert.equal(refused.status, 409, refused.text);
    assert.match(refused.body.errors.detail, /signed 1 stored firmware/);
    assert.equal((await hub.request('GET', `${keys}/prod`, { token })).status, 200);

    const del = await hub.request('DELETE', `${fw.firmwaresPath('acme', 'demo')}/${up.json.data.uuid}`, { token });
    assert.equal(del.status, 204);
    const gone = await hub.request('DELETE', `${keys}/prod`, { token });
    assert.equal(gone.status, 204, gone.text);
    assert.equal((await hub.request('GET', `${keys}/prod`, { token })).status, 404);

    // The other-key fixture (same meta.conf, so the same uuid) is accepted once its key is
    // registered, and attributed to it.
    const refusedFw = await fw.uploadRaw(hub, token, 'demo', fw.fixture('demo-1.1.0.other-key.fw'));
    assert.equal(refusedFw.status, 422);
    const other = await hub.request('POST', keys, { token, body: { name: 'other', key: fw.publicKey('other.pub') } });
    assert.equal(other.status, 201);
    const otherFw = await fw.uploadRaw(hub, token, 'demo', fw.fixture('demo-1.1.0.other-key.fw'));
    assert.equal(otherFw.status, 201, otherFw.body.toString());
    assert.equal(otherFw.json.data.key, 'other');
    assert.equal(otherFw.json.data.uuid, up.json.data.uuid);
    assert.equal((await hub.request('DELETE', `${keys}/other`, { token })).status, 409);
  });
});
