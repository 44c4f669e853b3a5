'use strict';
// Two otahubd nodes on one PostgreSQL: a change made through one node reaches devices on the
// other, concurrent_updates holds across both under parallel joins and churn, and an update whose
// notification was never sent is still delivered by the periodic sweep.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { startHub, makeServerCerts, dropDatabase } = require('../e2e/lib/hub');
const { TestPki } = require('../e2e/lib/pki');
const { DeviceFixture, eventually } = require('../e2e/lib/device_fixture');
const { nervesHubLinkJoinPayload } = require('../e2e/lib/device_client');

const fixtures = path.join(__dirname, '..', 'fixtures', 'fwup');
const expected = JSON.parse(fs.readFileSync(path.join(fixtures, 'expected.json'), 'utf8'));
const V1 = expected['demo-1.0.0.fw'].metadata['meta-uuid'];
const V2 = expected['demo-2.0.0.fw'].metadata['meta-uuid'];
const base = '/api/orgs/acme/products/demo';

let certDir;
let a; // node A: sweep every 10 minutes (pushes must come from events)
let b; // node B: sweep every second
let pki;
const open = [];

function psql(sql) {
  return execFileSync('psql', [a.hub.db.url, '-qAt', '-v', 'ON_ERROR_STOP=1', '-c', sql]).toString().trim();
}

async function caWithTags(name, tags) {
  const ca = pki.root(name);
  await a.registerCa(ca, { jitp: { product_name: 'demo', tags, description: name } });
  await b.waitForTrust(ca, true);
  return ca;
}

async function connect(node, ca, cn) {
  const device = await node.connect(ca.issueLeaf({ cn }), {
    joinPayload: nervesHubLinkJoinPayload({ uuid: V1, version: '1.0.0', product: 'demo' }),
  });
  open.push(device);
  return device;
}

const updatesOf = (device) => device.pushes.filter((p) => p.event === 'update').length;

before(async () => {
  certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'otahub-rollout-cluster-'));
  const certs = makeServerCerts(certDir);
  const hubA = await startHub({ certs, env: { OTAHUB_NODE_ID: 'node-a', OTAHUB_ROLLOUT_SWEEP_INTERVAL_MS: '600000' } });
  const token = await hubA.login();
  const hubB = await startHub({
    certs, database: hubA.db, admin: null,
    env: { OTAHUB_NODE_ID: 'node-b', OTAHUB_SECRET_KEY: hubA.env.OTAHUB_SECRET_KEY, OTAHUB_ROLLOUT_SWEEP_INTERVAL_MS: '1000' },
  });
  pki = new TestPki();
  a = new DeviceFixture(hubA, token, pki);
  b = new DeviceFixture(hubB, token, pki);
  assert.equal((await a.api('POST', '/api/orgs/acme/products', { name: 'demo' })).status, 201);
  const key = fs.readFileSync(path.join(fixtures, 'signing.pub'), 'utf8').trim();
  assert.equal((await a.api('POST', '/api/orgs/acme/keys', { name: 'release', key })).status, 201);
  for (const file of ['demo-1.0.0.fw', 'demo-2.0.0.fw']) {
    const res = await hubA.request('POST', `${base}/firmwares`, {
      token, raw: fs.readFileSync(path.join(fixtures, file)), headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(res.status, 201, res.text);
  }
});

after(async () => {
  for (const device of open) await device.close().catch(() => {});
  for (const f of [b, a]) if (f) await f.hub.stop({ keepDatabase: true });
  if (a) dropDatabase(a.hub.db.name);
  if (pki) pki.cleanup();
  if (certDir) fs.rmSync(certDir, { recursive: true, force: true });
});

test('a deployment activated through node A reaches a device on node B within a second', async () => {
  const ca = await caWithTags('Cross CA', ['cross']);
  const res = await a.api('POST', `${base}/deployments`,
    { name: 'cross-to-2', firmware: V2, is_active: false, conditions: { tags: ['cross'] } });
  assert.equal(res.status, 201, res.text);
  const onB = await connect(b, ca, 'cross-b');
  const onA = await connect(a, ca, 'cross-a');
  const started = Date.now();
  assert.equal((await a.api('PUT', `${base}/deployments/cross-to-2`, { is_active: true })).status, 200);
  const [fromB, fromA] = await Promise.all([onB.waitForPush('update', 1000), onA.waitForPush('update', 1000)]);
  assert.ok(Date.now() - started < 1000, `delivered after ${Date.now() - started} ms`);
  assert.equal(fromB.firmware_meta.uuid, V2);
  assert.equal(fromA.firmware_meta.uuid, V2);
});

test('concurrent_updates holds across both nodes under parallel joins and churn', async () => {
  const limit = 3;
  const ca = await caWithTags('Slots CA', ['slots']);
  const res = await a.api('POST', `${base}/deployments`, {
    name: 'slots-to-2', firmware: V2, is_active: true, concurrent_updates: limit, failure_threshold: 100000,
    device_failure_threshold: 100000, device_failure_rate_amount: 100000, conditions: { tags: ['slots'] },
  });
  assert.equal(res.status, 201, res.text);
  const id = res.body.data.id;

  let maxSeen = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const n = Number(psql(`SELECT count(*) FROM device_updates WHERE deployment_id = ${id} AND status = 'in_flight'`));
      maxSeen = Math.max(maxSeen, n);
      await new Promise((r) => setTimeout(r, 15));
    }
  })();

  // 16 devices join at once, half on each node.
  const devices = await Promise.all(Array.from({ length: 16 }, (_, i) => connect(i % 2 ? b : a, ca, `slots-${i}`)));
  // Churn: every device that gets an update fails it soon after, freeing its slot for another.
  const handled = new Map();
  const churnUntil = Date.now() + 3000;
  while (Date.now() < churnUntil) {
    for (const d of devices) {
      const n = updatesOf(d);
      if (n > (handled.get(d) || 0)) {
        handled.set(d, n);
        setTimeout(() => { if (!d.ended) d.push('status_update', { status: 'failed', reason: 'churn' }); }, Math.random() * 30);
      }
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  sampling = false;
  await sampler;
  const total = devices.reduce((sum, d) => sum + updatesOf(d), 0);
  assert.ok(maxSeen <= limit, `at most ${limit} in flight, saw ${maxSeen}`);
  assert.equal(maxSeen, limit, 'the limit was reached');
  assert.ok(total >= 3 * limit, `freed slots were reused (${total} updates sent)`);
  const nodesUsed = new Set(devices.filter((d) => updatesOf(d) > 0).map((d, i) => i % 2));
  assert.ok(nodesUsed.size >= 1);
  // Every update sent has a row, and never two in flight for one device. A failure reported in
  // the last moments of the churn frees a slot whose new update may still be on its way: wait for
  // the frames to land before comparing.
  const rowCount = () => Number(psql(`SELECT count(*) FROM device_updates WHERE deployment_id = ${id}`));
  const received = () => devices.reduce((sum, d) => sum + updatesOf(d), 0);
  await eventually(async () => rowCount() === received() || null,
    'every recorded update to reach its device', 3000).catch(() => {});
  assert.equal(rowCount(), received(), 'one history row per update sent');
});

test('an update whose notification was lost is delivered by the sweep', async () => {
  const ca = await caWithTags('Lost CA', ['lost']);
  const onB = await connect(b, ca, 'lost-b');
  const onA = await connect(a, ca, 'lost-a');
  // Written straight into the database: no NOTIFY is sent, as if it had been lost.
  psql(`INSERT INTO deployments (org_id, product_id, name, firmware_id, conditions_tags, is_active, concurrent_updates)
        SELECT p.org_id, p.id, 'lost-to-2', f.id, '{lost}', true, 0
        FROM products p JOIN firmwares f ON f.product_id = p.id WHERE p.name = 'demo' AND f.uuid = '${V2}'`);
  const update = await onB.waitForPush('update', 4000);
  assert.equal(update.firmware_meta.uuid, V2);
  // Node A sweeps every 10 minutes: its device is still waiting, which shows the sweep (not an
  // event) delivered node B's update.
  assert.equal(updatesOf(onA), 0);
  await eventually(async () => Number(psql("SELECT count(*) FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'lost-b'")) === 1,
    'in-flight row for lost-b');
});
