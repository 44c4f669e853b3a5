'use strict';
// Slow and half-open database links (issue 5, Faults), through a TCP proxy between the hub and
// PostgreSQL: with 200 ms added to every packet the API and the device endpoint keep working
// (slower) and heartbeats are not held up by database work; with a black hole (the link stays
// open, nothing comes back) connected devices keep their heartbeats, their reports are kept, and
// everything recovers when the link does. API requests ending in 503 within a bounded time on a
// black-holed link is a known gap, kept as a visible `todo` test below.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startProxiedHub, sleep, timed } = require('../e2e/lib/outage_support');
const { nervesHubLinkJoinPayload } = require('../e2e/lib/device_client');
const { eventually } = require('../e2e/lib/device_fixture');

// How long the hub may take to give up on a database that does not answer.
const BOUND_MS = 15000;

let env;
let device;

before(async () => {
  env = await startProxiedHub({ devicesTag: 'link' });
  device = await env.fx.connect(env.ca.issueLeaf({ cn: 'link-1' }), {
    joinPayload: nervesHubLinkJoinPayload({ uuid: env.V1, version: '1.0.0', product: 'demo' }),
    heartbeatIntervalMs: 2000,
  });
});

after(async () => {
  if (device) await device.close().catch(() => {});
  if (env) await env.stop();
});

const devices = () => env.fx.api('GET', '/api/orgs/acme/products/demo/devices');

test('slow link (200 ms per packet): requests succeed, heartbeats are not held up by database work', { timeout: 60000 }, async (t) => {
  const fast = await timed(devices);
  env.proxy.setLatency(200);
  try {
    const slow = await timed(devices);
    assert.equal(slow.value.status, 200, slow.value.text);
    assert.ok(slow.ms >= 200, `the latency applies (${slow.ms} ms)`);
    assert.ok(slow.ms < BOUND_MS, `answered in ${slow.ms} ms`);
    // Events that write to the database, then a heartbeat: answered without waiting for them.
    for (let i = 1; i <= 5; i += 1) device.push('fwup_progress', { value: i * 20, stage: `s${i}` });
    const rtt = await device.ping(5000);
    assert.ok(rtt < 1000, `heartbeat in ${rtt} ms behind five slow writes`);
    await eventually(() => env.psql("SELECT update_progress FROM devices WHERE identifier = 'link-1'") === '100',
      'the writes land in order', 20000, 200);
    t.diagnostic(`latency: API ${fast.ms} ms -> ${slow.ms} ms with 200 ms per packet; heartbeat ${rtt} ms behind writes`);
  } finally {
    env.proxy.setLatency(0);
  }
});

/** `promise`, or {timedOut: true} after `ms` (the promise keeps running). */
function within(promise, ms) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((resolve) => { timer = setTimeout(() => resolve({ timedOut: true }), ms); }),
  ]);
}

test('half-open link (black hole): devices keep heartbeats and stay connected, reports are kept, all recovers', { timeout: 120000 }, async (t) => {
  assert.equal((await devices()).status, 200);
  env.proxy.setMode('blackhole');
  let pending;
  try {
    device.push('status_update', { status: 'received' });
    device.push('fwup_progress', { value: 55 });
    pending = timed(devices);  // answered when the link returns (or 503 if the pool gives up)
    const rtts = [];
    for (let i = 0; i < 4; i += 1) {
      rtts.push(await device.ping(5000));
      await sleep(1000);
    }
    assert.ok(Math.max(...rtts) < 1000, `heartbeats in ${rtts.join(', ')} ms`);
    assert.ok(device.isConnected());
    t.diagnostic(`black hole: heartbeats ${rtts.join('/')} ms while the database link hangs`);
  } finally {
    env.proxy.setMode('up');
  }
  const started = Date.now();
  const first = await within(pending, 30000);
  assert.ok(!first.timedOut, 'the request held during the black hole ends once the link is back');
  assert.ok([200, 503].includes(first.value.status), first.value.text);
  await eventually(async () => (await devices()).status === 200, 'the API after the black hole', 30000, 250);
  await eventually(() => env.psql("SELECT update_progress FROM devices WHERE identifier = 'link-1'") === '55',
    'the report made during the black hole', 30000, 250);
  assert.equal(env.psql("SELECT update_status FROM devices WHERE identifier = 'link-1'"), 'updating');
  t.diagnostic(`half-open recovery in ${Date.now() - started} ms`);
  assert.ok(device.isConnected());
});

// Known gap, kept visible: libpq has no client-side query deadline and the pool sets no
// connect_timeout, so a request whose connection is already in a black hole waits until the link
// returns. Needs deadlines in db/database.cpp (outside this change); see README "Reliability".
test('half-open link (black hole): API requests end in 503 within a bounded time', {
  timeout: 90000, todo: 'needs client-side query and connect deadlines in db/database.cpp',
}, async (t) => {
  env.proxy.setMode('blackhole');
  try {
    const cut = await within(timed(devices), BOUND_MS);
    const ready = await within(timed(() => env.hub.request('GET', '/readyz')), BOUND_MS);
    t.diagnostic(`black hole: API ${cut.timedOut ? `no answer in ${BOUND_MS} ms` : `${cut.value.status} after ${cut.ms} ms`}, ` +
      `/readyz ${ready.timedOut ? `no answer in ${BOUND_MS} ms` : `${ready.value.status} after ${ready.ms} ms`}`);
    assert.ok(!cut.timedOut && cut.value.status === 503, 'API 503 within the bound');
    assert.ok(!ready.timedOut && ready.value.status === 503, '/readyz 503 within the bound');
  } finally {
    env.proxy.setMode('up');
    await eventually(async () => (await devices()).status === 200, 'the API after the black hole', 30000, 250);
  }
});
