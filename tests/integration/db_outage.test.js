'use strict';
// PostgreSQL outage (issue 5, Faults): the hub's database link is cut (connections reset, new
// ones refused, through a TCP proxy: from the hub's side the same as `pg_ctl stop -m immediate`)
// for OTAHUB_DB_OUTAGE_SECONDS (default 30) while devices are connected, updating and reporting.
// Connected devices stay connected and their heartbeats are answered; new handshakes are refused
// with 503; /readyz goes 503 then 200; and every status and update outcome reported during the
// outage is written once the database is back (the hub keeps device events in order per device
// and writes them back: server/device/device_channel.cpp, EventRecorder).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startProxiedHub, sleep, timed } = require('../e2e/lib/outage_support');
const { nervesHubLinkJoinPayload } = require('../e2e/lib/device_client');
const { eventually } = require('../e2e/lib/device_fixture');
const { sample } = require('../e2e/lib/metrics');

const OUTAGE_MS = 1000 * Number(process.env.OTAHUB_DB_OUTAGE_SECONDS || 30);
const HEARTBEAT_MS = 2000;

let env;
const open = [];

before(async () => {
  env = await startProxiedHub({ devicesTag: 'outage' });
});

after(async () => {
  for (const device of open) await device.close().catch(() => {});
  if (env) await env.stop();
});

async function connect(cn, uuid) {
  const leaf = env.ca.issueLeaf({ cn });
  const device = await env.fx.connect(leaf, {
    joinPayload: nervesHubLinkJoinPayload({ uuid, version: uuid === env.V1 ? '1.0.0' : '2.0.0', product: 'demo' }),
    heartbeatIntervalMs: HEARTBEAT_MS,
  });
  device.leaf = leaf;
  open.push(device);
  return device;
}

const readyz = () => env.hub.request('GET', '/readyz');

test('a database outage while devices update: nothing they report is lost', { timeout: OUTAGE_MS + 120000}, async () => {
  const { fx, proxy, psql, V1, V2 } = env;
  const deployment = await env.must('POST', '/api/orgs/acme/products/demo/deployments', {
    name: 'outage-to-2', firmware: V2, is_active: true, concurrent_updates: 3,
    device_failure_threshold: 100, device_failure_rate_amount: 100, conditions: { tags: ['outage'] },
  }, 201);
  const failing = await connect('outage-fails', V1);
  const progressing = await connect('outage-progress', V1);
  const rescheduling = await connect('outage-reschedules', V1);
  for (const d of [failing, progressing, rescheduling]) await d.waitForPush('update', 5000);
  const idle = await connect('outage-idle', V2);  // up to date: no update
  const leaving = await connect('outage-leaves', V2);  // disconnects during the outage
  const all = [failing, progressing, rescheduling, idle];
  const closes = () => all.reduce((n, d) => n + d.closes.length, 0);
  assert.equal(Number(psql(`SELECT count(*) FROM device_updates WHERE deployment_id = ${deployment.id} AND status = 'in_flight'`)), 3);
  assert.equal((await readyz()).status, 200);

  // ---- the outage ----
  const cutAt = Date.now();
  proxy.setMode('refuse');
  await eventually(async () => (await readyz()).status === 503, '/readyz 503', 10000, 100);
  const ready = await readyz();
  assert.equal(ready.body.reason, 'database unreachable');

  // Reports during the outage: progress, then the outcomes.
  progressing.push('fwup_progress', { value: 40 });
  failing.push('status_update', { status: 'fwup error', reason: 'disk full during the outage' });
  progressing.push('fwup_progress', { value: 100 });
  rescheduling.push('status_update', { status: 'rescheduled', delay_for: 1 });
  idle.push('connection_types', { values: ['ethernet', 'wifi'] });
  await leaving.close();
  const leftAt = Date.now();
  const pendingEnds = async () => sample((await env.hub.request('GET', '/metrics')).text, 'otahub_device_session_ends_pending');
  await eventually(async () => (await pendingEnds()) === 1, 'the session end kept (otahub_device_session_ends_pending 1)', 5000, 100);

  // The API answers 503 at once; a new device is refused with 503 (not a hang, not a crash).
  const api = await timed(() => fx.api('GET', '/api/orgs/acme/products/demo/devices'));
  assert.equal(api.value.status, 503, api.value.text);
  assert.ok(api.ms < 5000, `API 503 after ${api.ms} ms`);
  const newcomer = env.ca.issueLeaf({ cn: 'outage-newcomer' });
  const refused = await fx.upgrade(newcomer);
  assert.equal(refused.status, 503, JSON.stringify(refused));

  // Heartbeats are answered all through the outage, and nobody is disconnected.
  let pings = 0;
  while (Date.now() - cutAt < OUTAGE_MS) {
    for (const d of all) {
      const rtt = await d.ping(3000);
      assert.ok(rtt < 3000);
      pings += 1;
    }
    await sleep(Math.min(2000, Math.max(0, OUTAGE_MS - (Date.now() - cutAt))));
  }
  assert.equal(closes(), 0, 'no device was disconnected');
  assert.ok(all.every((d) => d.isConnected()));
  assert.ok(pings >= 4 * Math.floor(OUTAGE_MS / 5000), `${pings} heartbeats answered`);
  // Nothing reached the database yet (the proof that the writes below are write-backs).
  const failures = () => Number(psql("SELECT count(*) FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'outage-fails' AND u.status = 'failed' AND u.reason = 'disk full during the outage'"));
  assert.equal(failures(), 0);
  assert.equal(psql("SELECT coalesce(update_progress, -1) FROM devices WHERE identifier = 'outage-progress'"), '-1');

  // ---- recovery ----
  proxy.setMode('up');
  const upAt = Date.now();
  await eventually(async () => (await readyz()).status === 200, '/readyz 200', 15000, 100);
  const readyAfterMs = Date.now() - upAt;

  // Every report made during the outage is in the database, in order.
  await eventually(() => failures() === 1, 'the failure outcome', 20000, 200);
  await eventually(() => psql("SELECT update_progress FROM devices WHERE identifier = 'outage-progress'") === '100',
    'the last progress', 20000, 200);
  await eventually(() => psql("SELECT status FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'outage-reschedules' ORDER BY u.id DESC LIMIT 1") === 'rescheduled',
    'the rescheduled outcome', 20000, 200);
  await eventually(() => psql("SELECT update_status FROM devices WHERE identifier = 'outage-reschedules'") === 'rescheduled',
    'the rescheduled status', 20000, 200);
  await eventually(() => psql("SELECT array_to_string(connection_types, ',') FROM devices WHERE identifier = 'outage-idle'") === 'ethernet,wifi',
    'connection types', 20000, 200);
  assert.equal(psql("SELECT update_status FROM devices WHERE identifier = 'outage-fails'"), 'failed');
  // The device that left during the outage is offline, as of when it left (the hub kept its
  // session's end: server/device/presence.cpp).
  const leftRow = () => psql("SELECT c.status || ' ' || round(extract(epoch FROM c.disconnected_at) * 1000) FROM device_connections c JOIN devices d ON d.id = c.device_id WHERE d.identifier = 'outage-leaves' ORDER BY c.id DESC LIMIT 1");
  await eventually(() => leftRow().startsWith('disconnected '), 'the disconnection made during the outage', 20000, 200);
  const leftRecordedMs = Number(leftRow().split(' ')[1]);
  assert.ok(Math.abs(leftRecordedMs - leftAt) < 3000, `disconnected at ${leftRecordedMs - leftAt} ms from when it left`);
  assert.equal((await fx.device('outage-leaves', 'demo')).online, false);
  assert.equal(await pendingEnds(), 0);
  const writtenBackMs = Date.now() - upAt;

  // The freed slots were given out again (the failed device is retried), within the limit.
  await eventually(() => Number(psql(`SELECT count(*) FROM device_updates WHERE deployment_id = ${deployment.id} AND status = 'in_flight'`)) >= 1,
    'a slot in use again', 15000, 200);
  assert.ok(Number(psql(`SELECT count(*) FROM device_updates WHERE deployment_id = ${deployment.id} AND status = 'in_flight'`)) <= 3);

  // New devices get in again, and the API works.
  const late = await connect('outage-newcomer', V2);
  assert.ok(late.isConnected());
  assert.equal((await fx.api('GET', '/api/orgs/acme/products/demo/devices')).status, 200);
  assert.equal(closes(), 0, 'still nobody disconnected');
  assert.match(env.hub.log(), /wrote back \d+ device events kept during the outage/);
  for (const d of all) await d.close();
  await sleep(500);
  env.assertAlive();
  console.log(`outage ${OUTAGE_MS} ms: ${pings} heartbeats answered, /readyz green ${readyAfterMs} ms and ` +
    `all reports written ${writtenBackMs} ms after the database returned`);
});
