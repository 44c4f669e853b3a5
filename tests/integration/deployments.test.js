'use strict';
// Deployments API against a real hub: validation, conflicts, TTL references, preview and the
// per-device resolution explanation.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { startHub } = require('../e2e/lib/hub');

const fixtures = path.join(__dirname, '..', 'fixtures', 'fwup');
const expected = JSON.parse(fs.readFileSync(path.join(fixtures, 'expected.json'), 'utf8'));
const uuidOf = (file) => expected[file].metadata['meta-uuid'];

let hub;
let token;
const base = '/api/orgs/acme/products/demo';

function psql(sql) {
  return execFileSync('psql', [hub.db.url, '-qAt', '-v', 'ON_ERROR_STOP=1', '-c', sql]).toString().trim();
}

async function upload(product, file) {
  const res = await hub.request('POST', `/api/orgs/acme/products/${product}/firmwares`, {
    token, raw: fs.readFileSync(path.join(fixtures, file)),
    headers: { 'content-type': 'application/octet-stream' },
  });
  assert.equal(res.status, 201, `upload ${file}: ${res.text}`);
  return res.body.data;
}

/// Creates a device and sets what it would have reported on join.
async function device(identifier, { tags = [], version, platform = 'rpi4', architecture = 'aarch64', uuid = '' }) {
  const res = await hub.request('POST', `${base}/devices`, { token, body: { identifier, tags } });
  assert.equal(res.status, 201, res.text);
  psql(`UPDATE devices SET version = '${version}', platform = '${platform}', architecture = '${architecture}',
        firmware_uuid = '${uuid}' WHERE identifier = '${identifier}'`);
}

before(async () => {
  hub = await startHub();
  token = await hub.login();
  for (const product of ['demo', 'other']) {
    const res = await hub.request('POST', '/api/orgs/acme/products', { token, body: { name: product } });
    assert.equal(res.status, 201);
  }
  const key = fs.readFileSync(path.join(fixtures, 'signing.pub'), 'utf8').trim();
  const res = await hub.request('POST', '/api/orgs/acme/keys', { token, body: { name: 'release', key } });
  assert.equal(res.status, 201, res.text);
  await upload('demo', 'demo-1.0.0.fw');
  await upload('demo', 'demo-2.0.0.fw');
  await upload('demo', 'demo-1.1.0-bbb.fw');
  await upload('other', 'other-1.0.0.fw');
});

after(async () => {
  if (hub) await hub.stop();
});

test('create validates every field and names the problem', async () => {
  const good = { name: 'to-2', firmware: uuidOf('demo-2.0.0.fw'), conditions: { version: '~> 1.0', tags: ['beta'] } };
  const cases = [
    [{ ...good, conditions: { version: '~> nope' } }, 'conditions'],
    [{ ...good, firmware: '00000000-0000-0000-0000-000000000000' }, 'firmware'],
    [{ ...good, firmware: uuidOf('other-1.0.0.fw') }, 'firmware'],
    [{ ...good, conditions: { tag_operator: 'xor' } }, 'conditions'],
    [{ ...good, concurrent_updates: -1 }, 'concurrent_updates'],
    [{ ...good, state: 'maybe' }, 'state'],
    [{ firmware: good.firmware }, 'name'],
    [{ name: 'x' }, 'firmware'],
  ];
  for (const [body, field] of cases) {
    const res = await hub.request('POST', `${base}/deployments`, { token, body });
    assert.equal(res.status, 422, `${JSON.stringify(body)} → ${res.status} ${res.text}`);
    assert.ok(res.body.errors[field], `${field} named in ${res.text}`);
  }
  const list = await hub.request('GET', `${base}/deployments`, { token });
  assert.deepEqual(list.body.data, [], 'nothing stored by refused requests');
});

test('create, read, update, conflict and delete', async () => {
  const created = await hub.request('POST', `${base}/deployments`, {
    token,
    body: { deployment: { name: 'to-2', firmware: uuidOf('demo-2.0.0.fw'), conditions: { version: '~> 1.0', tags: ['beta'] } } },
  });
  assert.equal(created.status, 201, created.text);
  const d = created.body.data;
  assert.equal(d.is_active, false);
  assert.equal(d.state, 'off');
  assert.equal(d.firmware_version, '2.0.0');
  assert.equal(d.platform, 'rpi4');
  assert.equal(d.architecture, 'aarch64');
  assert.equal(d.concurrent_updates, 10);
  assert.equal(d.penalty_timeout_minutes, 1440);
  assert.deepEqual(d.conditions, { version: '~> 1.0', tags: ['beta'], tag_operator: 'and' });

  const dup = await hub.request('POST', `${base}/deployments`, { token, body: { name: 'to-2', firmware: uuidOf('demo-1.0.0.fw') } });
  assert.equal(dup.status, 409);

  const on = await hub.request('PUT', `${base}/deployments/to-2`, { token, body: { deployment: { state: 'on', concurrent_updates: 0 } } });
  assert.equal(on.status, 200, on.text);
  assert.equal(on.body.data.is_active, true);
  assert.equal(on.body.data.concurrent_updates, 0);
  assert.deepEqual(on.body.data.conditions.tags, ['beta'], 'fields not given are kept');

  const bad = await hub.request('PUT', `${base}/deployments/to-2`, { token, body: { conditions: { version: '>= 1.0' } } });
  assert.equal(bad.status, 422);
  const still = await hub.request('GET', `${base}/deployments/to-2`, { token });
  assert.equal(still.body.data.conditions.version, '~> 1.0', 'a refused update changes nothing');

  const missing = await hub.request('GET', `${base}/deployments/nope`, { token });
  assert.equal(missing.status, 404);
});

test('firmware used by a deployment cannot be deleted, and its TTL clock stops', async () => {
  const uuid = uuidOf('demo-1.0.0.fw');
  psql(`UPDATE firmwares SET ttl_seconds = 3600, ttl_until = now() + interval '1 hour' WHERE uuid = '${uuid}'`);
  const res = await hub.request('POST', `${base}/deployments`, { token, body: { name: 'pin-1', firmware: uuid } });
  assert.equal(res.status, 201, res.text);
  assert.equal(psql(`SELECT ttl_until IS NULL FROM firmwares WHERE uuid = '${uuid}'`), 't');
  const del = await hub.request('DELETE', `${base}/firmwares/${uuid}`, { token });
  assert.equal(del.status, 409, del.text);
  const gone = await hub.request('DELETE', `${base}/deployments/pin-1`, { token });
  assert.equal(gone.status, 204);
  assert.equal(psql(`SELECT ttl_until IS NOT NULL FROM firmwares WHERE uuid = '${uuid}'`), 't',
    'unreferenced firmware with a TTL starts its clock again');
});

test('preview and resolution explain which devices match and why others do not', async () => {
  await device('dev-beta-1', { tags: ['beta'], version: '1.0.0', uuid: uuidOf('demo-1.0.0.fw') });
  await device('dev-beta-2', { tags: ['beta', 'eu'], version: '1.5.3' });
  await device('dev-prod', { tags: ['prod'], version: '1.0.0' });
  await device('dev-old-major', { tags: ['beta'], version: '0.9.0' });
  await device('dev-bbb', { tags: ['beta'], version: '1.0.0', platform: 'bbb', architecture: 'armv7' });
  await device('dev-current', { tags: ['beta'], version: '2.0.0', uuid: uuidOf('demo-2.0.0.fw') });

  const preview = await hub.request('GET', `${base}/deployments/to-2/preview`, { token });
  assert.equal(preview.status, 200, preview.text);
  const ids = preview.body.data.devices.map((d) => d.identifier).sort();
  assert.deepEqual(ids, ['dev-beta-1', 'dev-beta-2']);
  assert.equal(preview.body.data.matching_devices, 2);
  assert.equal(preview.body.data.eligible_devices, 2);

  const why = async (identifier) => {
    const res = await hub.request('GET', `${base}/devices/${identifier}/resolution`, { token });
    assert.equal(res.status, 200, res.text);
    return res.body.data;
  };
  const beta = await why('dev-beta-1');
  assert.equal(beta.deployment.name, 'to-2');
  assert.equal(beta.eligible, true);
  const prod = await why('dev-prod');
  assert.equal(prod.deployment, null);
  assert.equal(prod.deployments.find((d) => d.deployment === 'to-2').exclusion, 'tags');
  const old = await why('dev-old-major');
  assert.equal(old.deployments.find((d) => d.deployment === 'to-2').exclusion, 'version_requirement');
  const bbb = await why('dev-bbb');
  assert.equal(bbb.deployments.find((d) => d.deployment === 'to-2').exclusion, 'platform');

  // A draft that would take 2.x devices to the bbb firmware matches nobody on rpi4.
  const draft = await hub.request('POST', `${base}/deployments/preview`, {
    token, body: { name: 'draft', firmware: uuidOf('demo-1.1.0-bbb.fw'), conditions: { version: '' } },
  });
  assert.equal(draft.status, 200, draft.text);
  assert.deepEqual(draft.body.data.devices.map((d) => d.identifier), ['dev-bbb']);
  assert.equal((await hub.request('GET', `${base}/deployments/draft`, { token })).status, 404,
    'a previewed draft is not stored');

  // Switching the deployment off removes every device from it.
  await hub.request('PUT', `${base}/deployments/to-2`, { token, body: { is_active: false } });
  const off = await why('dev-beta-1');
  assert.equal(off.deployment, null);
  assert.equal(off.deployments.find((d) => d.deployment === 'to-2').exclusion, 'inactive');
});

test('a view-only member can read but not change deployments', async () => {
  const add = await hub.request('POST', '/api/orgs/acme/users', {
    token, body: { email: 'viewer@example.com', role: 'view', password: 'viewer password' },
  });
  assert.equal(add.status, 201, add.text);
  const viewer = await hub.login('viewer@example.com', 'viewer password');
  assert.equal((await hub.request('GET', `${base}/deployments`, { token: viewer })).status, 200);
  const put = await hub.request('PUT', `${base}/deployments/to-2`, { token: viewer, body: { state: 'on' } });
  assert.equal(put.status, 403);
  const del = await hub.request('DELETE', `${base}/deployments/to-2`, { token: viewer });
  assert.equal(del.status, 403);
  assert.equal((await hub.request('GET', `${base}/deployments/to-2`, { token })).status, 200);
});
