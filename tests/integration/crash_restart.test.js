'use strict';
// Crash and restart (issue 5, Faults): otahubd is killed with SIGKILL in the middle of a rollout
// with concurrent_updates = 2. A new process on the same database, data directory and device
// port must find the same two updates in flight (no slot lost, none given twice), resend them to
// their devices when those reconnect, keep the others waiting, and go on handing out freed
// slots within the limit.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { startHub } = require('../e2e/lib/hub');
const { TestPki } = require('../e2e/lib/pki');
const { DeviceFixture, eventually } = require('../e2e/lib/device_fixture');
const { nervesHubLinkJoinPayload } = require('../e2e/lib/device_client');
const { uuidOf } = require('../e2e/lib/outage_support');

const fixtures = path.join(__dirname, '..', 'fixtures', 'fwup');
const V1 = uuidOf('demo-1.0.0.fw');
const V2 = uuidOf('demo-2.0.0.fw');

let first;   // the hub that is killed (owns the database and the data directory)
let second;  // its replacement
let pki;
const open = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

before(async () => {
  pki = new TestPki();
});

after(async () => {
  for (const device of open) await device.close().catch(() => {});
  if (second) await second.stop();
  if (first) await first.stop();
  if (pki) pki.cleanup();
});

test('kill -9 during a rollout: in-flight updates and the concurrency limit survive, devices continue', { timeout: 120000 }, async () => {
  const devicePort = await freePort();
  const env = { OTAHUB_DEVICE_LISTEN: `127.0.0.1:${devicePort}`, OTAHUB_ROLLOUT_SWEEP_INTERVAL_MS: '600000' };
  first = await startHub({ env });
  const dataDir = first.env.OTAHUB_DATA_DIR;
  const psql = (sql) => execFileSync('psql', [first.db.url, '-qAt', '-v', 'ON_ERROR_STOP=1', '-c', sql]).toString().trim();
  let fx = new DeviceFixture(first, await first.login(), pki);
  assert.equal((await fx.api('POST', '/api/orgs/acme/products', { name: 'demo' })).status, 201);
  const key = fs.readFileSync(path.join(fixtures, 'signing.pub'), 'utf8').trim();
  assert.equal((await fx.api('POST', '/api/orgs/acme/keys', { name: 'release', key })).status, 201);
  for (const file of ['demo-1.0.0.fw', 'demo-2.0.0.fw']) {
    const res = await first.request('POST', '/api/orgs/acme/products/demo/firmwares', {
      token: fx.token, raw: fs.readFileSync(path.join(fixtures, file)),
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(res.status, 201, res.text);
  }
  const ca = pki.root('Crash CA');
  await fx.registerCa(ca, { jitp: { product_name: 'demo', tags: ['crash'], description: 'crash' } });
  const res = await fx.api('POST', '/api/orgs/acme/products/demo/deployments', {
    name: 'crash-to-2', firmware: V2, is_active: true, concurrent_updates: 2,
    device_failure_threshold: 100, device_failure_rate_amount: 100, conditions: { tags: ['crash'] },
  });
  assert.equal(res.status, 201, res.text);
  const deploymentId = res.body.data.id;
  const inFlight = () => psql(`SELECT string_agg(d.identifier, ',' ORDER BY d.identifier) FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE u.deployment_id = ${deploymentId} AND u.status = 'in_flight'`);

  const devices = [];
  for (let i = 1; i <= 5; i += 1) {
    const leaf = ca.issueLeaf({ cn: `crash-${i}` });
    const device = await fx.connect(leaf, {
      joinPayload: nervesHubLinkJoinPayload({ uuid: V1, version: '1.0.0', product: 'demo' }),
      reconnect: true, maxReconnects: 100, heartbeatIntervalMs: 2000,
    });
    device.cn = `crash-${i}`;
    device.leaf = leaf;
    devices.push(device);
    open.push(device);
  }
  const updatedBefore = await eventually(() => {
    const got = devices.filter((d) => d.pushes.some((p) => p.event === 'update'));
    return got.length === 2 ? got : null;
  }, 'two updates sent', 5000);
  const slotsBefore = inFlight();
  assert.equal(slotsBefore, updatedBefore.map((d) => d.cn).sort().join(','));

  // One device reports progress, then the process dies without any clean-up.
  updatedBefore[0].push('fwup_progress', { value: 30 });
  await eventually(() => psql("SELECT coalesce(update_progress, -1) FROM devices WHERE identifier = '" + updatedBefore[0].cn + "'") === '30', 'progress written');
  const pushesAtCrash = devices.map((d) => d.pushes.length);
  const joinsAtCrash = devices.map((d) => d.joinCount);
  first.child.kill('SIGKILL');
  await new Promise((r) => first.child.once('exit', r));
  assert.equal(first.child.signalCode, 'SIGKILL');
  assert.equal(inFlight(), slotsBefore, 'the in-flight rows are durable');

  // ---- restart on the same database, data directory and port ----
  second = await startHub({ database: first.db, certs: first.certs, admin: null,
    env: { ...env, OTAHUB_DATA_DIR: dataDir, OTAHUB_SECRET_KEY: first.env.OTAHUB_SECRET_KEY } });
  fx = new DeviceFixture(second, await second.login('admin@example.com', 'correct horse battery'), pki);

  // Every device reconnects and rejoins by itself.
  await Promise.all(devices.map((d, i) => d.waitForJoinCount(joinsAtCrash[i] + 1, 20000)));
  // The two in-flight devices get their update again (the download resumes); nobody else does.
  for (const d of updatedBefore) {
    await eventually(() => d.pushes.slice(pushesAtCrash[devices.indexOf(d)]).some((p) => p.event === 'update'),
      `${d.cn} gets its update again`, 10000);
  }
  await new Promise((r) => setTimeout(r, 500));
  const waiting = devices.filter((d) => !updatedBefore.includes(d));
  for (const d of waiting) {
    assert.equal(d.pushes.slice(pushesAtCrash[devices.indexOf(d)]).filter((p) => p.event === 'update').length, 0,
      `${d.cn} still waits for a slot`);
  }
  assert.equal(inFlight(), slotsBefore, 'same two in flight after the restart');

  // The first finishes (reconnects running 2.0.0): its slot goes to exactly one waiting device.
  const done = updatedBefore[0];
  await done.close();
  const rebooted = await fx.connect(done.leaf, {
    joinPayload: nervesHubLinkJoinPayload({ uuid: V2, version: '2.0.0', product: 'demo' }),
  });
  open.push(rebooted);
  await eventually(() => waiting.filter((d) => d.pushes.slice(pushesAtCrash[devices.indexOf(d)]).some((p) => p.event === 'update')).length === 1,
    'the freed slot is given to one waiting device', 10000);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(waiting.filter((d) => d.pushes.slice(pushesAtCrash[devices.indexOf(d)]).some((p) => p.event === 'update')).length, 1,
    'exactly one: the limit holds');
  assert.equal(psql(`SELECT count(*) FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = '${done.cn}' AND u.status = 'succeeded'`), '1');
  assert.equal(inFlight().split(',').length, 2, 'two in flight');
});
