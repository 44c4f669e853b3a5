'use strict';
// Deployments in motion on one hub: the `update` push after a join and on every change that makes
// a connected device eligible, in-flight bookkeeping, concurrency slots, penalty box, fleet pause,
// rescheduling, manual actions. The sweep is set to 10 minutes here, so every push below must come
// from the event path, not from the periodic reconciliation.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { startHub } = require('../e2e/lib/hub');
const { TestPki } = require('../e2e/lib/pki');
const { DeviceFixture, eventually } = require('../e2e/lib/device_fixture');
const { nervesHubLinkJoinPayload } = require('../e2e/lib/device_client');

const fixtures = path.join(__dirname, '..', 'fixtures', 'fwup');
const expected = JSON.parse(fs.readFileSync(path.join(fixtures, 'expected.json'), 'utf8'));
const uuidOf = (file) => expected[file].metadata['meta-uuid'];
const V1 = uuidOf('demo-1.0.0.fw');
const V2 = uuidOf('demo-2.0.0.fw');
const V21 = uuidOf('demo-2.1.0-rc.1.fw');
const base = '/api/orgs/acme/products/demo';

let hub;
let fx;
let pki;
const open = [];

function psql(sql) {
  return execFileSync('psql', [hub.db.url, '-qAt', '-v', 'ON_ERROR_STOP=1', '-c', sql]).toString().trim();
}

/** A CA whose JIT-provisioned devices carry `tags`, so each test has its own devices. */
async function caWithTags(name, tags) {
  const ca = pki.root(name);
  await fx.registerCa(ca, { jitp: { product_name: 'demo', tags, description: name } });
  return ca;
}

/** Connects device `cn` of `ca` reporting firmware `uuid`/`version`. */
async function connect(ca, cn, { uuid = V1, version = '1.0.0', extra = {}, fixture = fx, leaf = ca.issueLeaf({ cn }) } = {}) {
  const device = await fixture.connect(leaf, {
    joinPayload: nervesHubLinkJoinPayload({ uuid, version, product: 'demo', ...extra }),
  });
  open.push(device);
  device.leaf = leaf;
  return device;
}

/** Reconnects the same device (same certificate), reporting what `opts` says. */
async function reconnect(ca, device, cn, opts = {}) {
  await device.close();
  return connect(ca, cn, { ...opts, leaf: device.leaf });
}

async function deploy(body) {
  const res = await fx.api('POST', `${base}/deployments`, { concurrent_updates: 0, ...body });
  assert.equal(res.status, 201, res.text);
  return res.body.data;
}

/** Resolves false when no `update` push arrives within `ms`. */
async function noUpdate(device, ms = 400) {
  try {
    await device.waitForPush('update', ms);
    return false;
  } catch {
    return true;
  }
}

function inFlight(deploymentId) {
  return Number(psql(`SELECT count(*) FROM device_updates WHERE deployment_id = ${deploymentId} AND status = 'in_flight'`));
}

function download(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
    }).on('error', reject);
  });
}

before(async () => {
  hub = await startHub({ env: { OTAHUB_ROLLOUT_SWEEP_INTERVAL_MS: '600000' } });
  const token = await hub.login();
  pki = new TestPki();
  fx = new DeviceFixture(hub, token, pki);
  assert.equal((await fx.api('POST', '/api/orgs/acme/products', { name: 'demo' })).status, 201);
  const key = fs.readFileSync(path.join(fixtures, 'signing.pub'), 'utf8').trim();
  assert.equal((await fx.api('POST', '/api/orgs/acme/keys', { name: 'release', key })).status, 201);
  for (const file of ['demo-1.0.0.fw', 'demo-2.0.0.fw', 'demo-2.1.0-rc.1.fw']) {
    const res = await hub.request('POST', `${base}/firmwares`, {
      token, raw: fs.readFileSync(path.join(fixtures, file)),
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(res.status, 201, `${file}: ${res.text}`);
  }
});

after(async () => {
  for (const device of open) await device.close().catch(() => {});
  if (hub) await hub.stop();
  if (pki) pki.cleanup();
});

test('a joining device gets NervesHub\'s update payload after its join reply, downloads it, and succeeds on reconnect', async () => {
  const ca = await caWithTags('Join CA', ['join']);
  const deployment = await deploy({ name: 'join-to-2', firmware: V2, is_active: true,
    conditions: { version: '~> 1.0', tags: ['join'] } });
  const device = await connect(ca, 'join-1');
  const update = await device.waitForPush('update', 3000);

  // The join reply comes first, then the push with join_ref and ref null.
  const replyAt = device.frames.findIndex((f) => f.event === 'phx_reply' && f.topic === 'device');
  const pushAt = device.frames.findIndex((f) => f.event === 'update');
  assert.ok(replyAt !== -1 && replyAt < pushAt, `reply at ${replyAt}, update at ${pushAt}`);
  assert.equal(device.frames[pushAt].ref, null);
  assert.equal(device.frames[pushAt].join_ref, null);

  const file = fs.readFileSync(path.join(fixtures, 'demo-2.0.0.fw'));
  assert.equal(update.update_available, true);
  assert.equal(update.deployment_id, deployment.id);
  assert.equal(update.size, file.length);
  assert.equal(update.checksum, crypto.createHash('sha256').update(file).digest('hex').toUpperCase());
  assert.ok(Array.isArray(update.partials_checksums) && update.partials_checksums.length >= 1);
  for (const sum of update.partials_checksums) assert.match(sum, /^[0-9A-F]{64}$/);
  assert.deepEqual(Object.keys(update.firmware_meta).sort(),
    ['architecture', 'author', 'description', 'misc', 'platform', 'product', 'uuid', 'vcs_identifier', 'version']);
  assert.equal(update.firmware_meta.uuid, V2);
  assert.equal(update.firmware_meta.version, '2.0.0');
  assert.equal(update.firmware_meta.platform, 'rpi4');
  assert.equal(update.firmware_meta.architecture, 'aarch64');
  assert.equal(update.firmware_meta.product, 'demo');
  const fetched = await download(update.firmware_url);
  assert.equal(fetched.status, 200);
  assert.ok(fetched.body.equals(file), 'the signed URL serves the firmware bytes');

  // Progress is visible while in flight.
  device.push('status_update', { status: 'received' });
  device.push('fwup_progress', { stage: 'updating', value: 40 });
  const history = await eventually(async () => {
    const res = await fx.api('GET', `${base}/devices/join-1/updates`);
    return res.body.data[0] && res.body.data[0].progress === 40 ? res.body.data : null;
  }, 'progress 40 in the history');
  assert.equal(history[0].status, 'in_flight');
  assert.equal(history[0].deployment, 'join-to-2');
  assert.equal(history[0].firmware_uuid, V2);

  // Reconnecting on the old firmware resends the same update (the download resumes)...
  let again = await reconnect(ca, device, 'join-1');
  const resent = await again.waitForPush('update', 3000);
  assert.equal(resent.firmware_meta.uuid, V2);
  assert.equal(inFlight(deployment.id), 1, 'still one update in flight');
  // ...and reconnecting on the new firmware ends it as succeeded; nothing more is sent.
  again = await reconnect(ca, again, 'join-1', { uuid: V2, version: '2.0.0' });
  const done = await eventually(async () => {
    const res = await fx.api('GET', `${base}/devices/join-1/updates`);
    return res.body.data[0].status === 'succeeded' ? res.body.data : null;
  }, 'update succeeded');
  assert.equal(done.length, 1);
  assert.ok(await noUpdate(again));
  const got = await fx.api('GET', `${base}/deployments/join-to-2`);
  assert.deepEqual({ ...got.body.data.counts, matching_devices: undefined, eligible_devices: undefined },
    { in_flight: 0, succeeded: 1, failed: 0, matching_devices: undefined, eligible_devices: undefined });
});

test('activating a deployment pushes to an eligible connected device within a second', async () => {
  const ca = await caWithTags('Activate CA', ['activate']);
  await deploy({ name: 'activate-to-2', firmware: V2, is_active: false, conditions: { tags: ['activate'] } });
  const device = await connect(ca, 'activate-1');
  assert.ok(await noUpdate(device), 'no update while the deployment is off');
  const started = Date.now();
  const res = await fx.api('PUT', `${base}/deployments/activate-to-2`, { state: 'on' });
  assert.equal(res.status, 200, res.text);
  const update = await device.waitForPush('update', 1000);
  assert.ok(Date.now() - started < 1000, `update after ${Date.now() - started} ms`);
  assert.equal(update.firmware_meta.uuid, V2);
});

test('a device whose tags change into a deployment gets the update', async () => {
  const ca = await caWithTags('Tags CA', ['tags']);
  await deploy({ name: 'canary-to-2', firmware: V2, is_active: true, conditions: { tags: ['tags', 'canary'] } });
  const device = await connect(ca, 'tags-1');
  assert.ok(await noUpdate(device), 'not a canary yet');
  const res = await fx.api('PUT', `${base}/devices/tags-1`, { tags: ['tags', 'canary'] });
  assert.equal(res.status, 200, res.text);
  const update = await device.waitForPush('update', 1000);
  assert.equal(update.firmware_meta.uuid, V2);
});

test('concurrent_updates is never exceeded and a freed slot goes to a waiting device', async () => {
  const ca = await caWithTags('Slots CA', ['slots']);
  const deployment = await deploy({ name: 'slots-to-2', firmware: V2, is_active: true, concurrent_updates: 2,
    device_failure_threshold: 100, device_failure_rate_amount: 100, conditions: { tags: ['slots'] } });
  const devices = await Promise.all([1, 2, 3, 4, 5].map((i) => connect(ca, `slots-${i}`)));
  await eventually(async () => devices.filter((d) => d.pushes.some((p) => p.event === 'update')).length === 2,
    'two updates sent');
  await new Promise((r) => setTimeout(r, 300));
  const updated = devices.filter((d) => d.pushes.some((p) => p.event === 'update'));
  assert.equal(updated.length, 2, 'exactly the limit');
  assert.equal(inFlight(deployment.id), 2);

  // One fails: its slot goes to a device that was waiting (and the failed one may retry).
  const started = Date.now();
  updated[0].push('status_update', { status: 'failed', reason: 'disk full' });
  await eventually(async () => devices.filter((d) => d.pushes.some((p) => p.event === 'update')).length === 3
    || updated[0].pushes.filter((p) => p.event === 'update').length === 2, 'the freed slot is used');
  assert.ok(Date.now() - started < 1000, `slot reused after ${Date.now() - started} ms`);
  assert.equal(inFlight(deployment.id), 2, 'still two in flight');
});

test('repeated failures put a device in the penalty box; clearing it sends the update again', async () => {
  const ca = await caWithTags('Penalty CA', ['penalty']);
  await deploy({ name: 'penalty-to-2', firmware: V2, is_active: true, device_failure_threshold: 2,
    penalty_timeout_minutes: 60, conditions: { tags: ['penalty'] } });
  const device = await connect(ca, 'penalty-1');
  await device.waitForPush('update', 3000);
  device.push('status_update', { status: 'fwup error', reason: 'bad sector' });
  await device.waitForPush('update', 3000); // first failure: retried at once
  device.push('status_update', { status: 'failed', reason: 'bad sector' });
  assert.ok(await noUpdate(device, 600), 'in the penalty box after the second failure');
  const resolution = await fx.api('GET', `${base}/devices/penalty-1/resolution`);
  assert.equal(resolution.body.data.eligible, false);
  const chosen = resolution.body.data.deployments.find((d) => d.deployment === 'penalty-to-2');
  assert.equal(chosen.blocker, 'penalty_box');
  const history = (await fx.api('GET', `${base}/devices/penalty-1/updates`)).body.data;
  assert.deepEqual(history.map((u) => u.status), ['failed', 'failed']);

  assert.equal((await fx.api('DELETE', `${base}/devices/penalty-1/penalty`)).status, 204);
  const update = await device.waitForPush('update', 1000);
  assert.equal(update.firmware_meta.uuid, V2);
});

test('fleet failures over failure_threshold pause the deployment, with an audit entry', async () => {
  const ca = await caWithTags('Pause CA', ['pause']);
  await deploy({ name: 'pause-to-2', firmware: V2, is_active: true, failure_threshold: 2,
    device_failure_threshold: 1, conditions: { tags: ['pause'] } });
  const devices = await Promise.all([1, 2].map((i) => connect(ca, `pause-${i}`)));
  for (const d of devices) await d.waitForPush('update', 3000);
  devices[0].push('status_update', { status: 'failed', reason: 'x' });
  devices[1].push('status_update', { status: 'ignored', reason: 'user busy' });
  const paused = await eventually(async () => {
    const res = await fx.api('GET', `${base}/deployments/pause-to-2`);
    return res.body.data.is_active === false ? res.body.data : null;
  }, 'deployment paused');
  assert.match(paused.paused_reason, /failure threshold of 2/);
  assert.equal(paused.counts.failed, 2);
  assert.equal(psql("SELECT count(*) FROM audit_logs WHERE action = 'deployment.paused' AND resource = 'pause-to-2'"), '1');
  // A third device of the group gets nothing from a paused deployment.
  const late = await connect(ca, 'pause-3');
  assert.ok(await noUpdate(late));
});

test('rescheduled blocks the device for delay_for minutes (not milliseconds)', async () => {
  const ca = await caWithTags('Resched CA', ['resched']);
  await deploy({ name: 'resched-to-2', firmware: V2, is_active: true, conditions: { tags: ['resched'] } });
  const device = await connect(ca, 'resched-1');
  await device.waitForPush('update', 3000);
  device.push('status_update', { status: 'rescheduled', delay_for: 5, reason: 'busy' });
  const minutes = await eventually(async () => {
    const v = psql("SELECT extract(epoch FROM updates_blocked_until - now()) / 60 FROM devices WHERE identifier = 'resched-1' AND updates_blocked_until IS NOT NULL");
    return v ? Number(v) : null;
  }, 'blocked');
  assert.ok(minutes > 4.5 && minutes <= 5.01, `blocked for ${minutes} minutes`);
  const history = (await fx.api('GET', `${base}/devices/resched-1/updates`)).body.data;
  assert.equal(history[0].status, 'rescheduled');
  assert.ok(await noUpdate(device));
});

test('a multi-step upgrade path: 1.x → 2.0 through one deployment, then 2.0 → 2.1 through the next', async () => {
  const ca = await caWithTags('Path CA', ['path']);
  await deploy({ name: 'path-1-to-2', firmware: V2, is_active: true, conditions: { version: '~> 1.0', tags: ['path'] } });
  await deploy({ name: 'path-2-to-21', firmware: V21, is_active: true,
    conditions: { version: '>= 2.0.0 and < 2.1.0', tags: ['path'] } });
  let device = await connect(ca, 'path-1');
  assert.equal((await device.waitForPush('update', 3000)).firmware_meta.uuid, V2);
  device = await reconnect(ca, device, 'path-1', { uuid: V2, version: '2.0.0' });
  assert.equal((await device.waitForPush('update', 3000)).firmware_meta.uuid, V21);
});

test('manual upgrade, reboot and identify reach the device; upgrade turns automatic updates off', async () => {
  const ca = await caWithTags('Manual CA', ['manual']);
  const device = await connect(ca, 'manual-1');
  const res = await fx.api('POST', `${base}/devices/manual-1/upgrade`, { uuid: V21 });
  assert.equal(res.status, 202, res.text);
  const update = await device.waitForPush('update', 1000);
  assert.equal(update.firmware_meta.uuid, V21);
  assert.equal(update.deployment_id, null);
  assert.equal((await fx.device('manual-1', 'demo')).updates_enabled, false);
  assert.equal((await fx.api('POST', `${base}/devices/manual-1/upgrade`, { uuid: '00000000-0000-0000-0000-000000000000' })).status, 422);

  assert.equal((await fx.api('POST', `${base}/devices/manual-1/reboot`)).status, 200);
  await device.waitForPush('reboot', 1000);
  assert.equal((await fx.api('POST', `${base}/devices/manual-1/identify`)).status, 200);
  await device.waitForPush('identify', 1000);
  await device.close();
  await eventually(async () => !(await fx.device('manual-1', 'demo')).online, 'offline');
  const offline = await fx.api('POST', `${base}/devices/manual-1/reboot`);
  assert.equal(offline.status, 409);
  assert.ok(offline.body.errors.detail);
  assert.ok(psql("SELECT count(*) FROM audit_logs WHERE resource = 'manual-1'") >= 3);
});
