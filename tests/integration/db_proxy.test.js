'use strict';
// Slow and half-open database links (issue 5, Faults), through a TCP proxy between the hub and
// PostgreSQL: with 200 ms added to every packet the API and the device endpoint keep working
// (slower) and heartbeats are not held up by database work; with a black hole (the link stays
// open, nothing comes back) connected devices keep their heartbeats, their reports are kept,
// API requests and /readyz end in 503 within a bounded time (the pool's client-side deadlines:
// OTAHUB_DB_TRANSACTION_TIMEOUT, OTAHUB_DB_CONNECT_TIMEOUT; db/database.cpp), callers are refused
// at once while one of them probes the database, and everything recovers when the link does.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startProxiedHub, sleep, timed } = require('../e2e/lib/outage_support');
const { nervesHubLinkJoinPayload } = require('../e2e/lib/device_client');
const { eventually } = require('../e2e/lib/device_fixture');

// The hub's deadlines here (shorter than the defaults, 15 s and 5 s, to keep the test short),
// and how long the hub may take to give up on a database that does not answer.
const TRANSACTION_TIMEOUT_S = 6;
const CONNECT_TIMEOUT_S = 3;
const BOUND_MS = 1000 * (TRANSACTION_TIMEOUT_S + CONNECT_TIMEOUT_S) + 3000;

let env;
let device;

before(async () => {
  env = await startProxiedHub({
    devicesTag: 'link',
    env: {
      OTAHUB_DB_TRANSACTION_TIMEOUT: String(TRANSACTION_TIMEOUT_S),
      OTAHUB_DB_CONNECT_TIMEOUT: String(CONNECT_TIMEOUT_S),
    },
  });
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
const identify = () => env.fx.api('POST', '/api/orgs/acme/products/demo/devices/link-1/identify');

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

test('half-open link (black hole): API requests and /readyz end in 503 within a bounded time, others at once', {
  timeout: 120000,
}, async (t) => {
  env.proxy.setMode('blackhole');
  try {
    const cut = await within(timed(devices), BOUND_MS);
    const ready = await within(timed(() => env.hub.request('GET', '/readyz')), BOUND_MS);
    t.diagnostic(`black hole: API ${cut.timedOut ? `no answer in ${BOUND_MS} ms` : `${cut.value.status} after ${cut.ms} ms`}, ` +
      `/readyz ${ready.timedOut ? `no answer in ${BOUND_MS} ms` : `${ready.value.status} after ${ready.ms} ms`}`);
    assert.ok(!cut.timedOut, `the API answered within ${BOUND_MS} ms`);
    assert.equal(cut.value.status, 503, cut.value.text);
    assert.match(cut.value.body.error?.message ?? cut.value.text, /database/);
    assert.ok(!ready.timedOut, `/readyz answered within ${BOUND_MS} ms`);
    assert.equal(ready.value.status, 503, ready.value.text);
    assert.equal(ready.value.body.reason, 'database unreachable');

    // The database now counts as unreachable: of several requests at once, one waits for its
    // connection attempt (bounded by the connect timeout) and the others are refused at once.
    const burst = await Promise.all([1, 2, 3, 4].map(() => within(timed(devices), BOUND_MS)));
    assert.ok(burst.every((r) => !r.timedOut && r.value.status === 503),
      burst.map((r) => (r.timedOut ? 'timeout' : r.value.status)).join(','));
    const fastest = Math.min(...burst.map((r) => r.ms));
    t.diagnostic(`black hole burst: 503 after ${burst.map((r) => r.ms).join('/')} ms`);
    assert.ok(fastest < 1000 * CONNECT_TIMEOUT_S,
      `some request was refused without waiting for a connection attempt (fastest ${fastest} ms)`);
    assert.ok(device.isConnected(), 'the device stays connected through the black hole');
  } finally {
    env.proxy.setMode('up');
  }
  const back = Date.now();
  await eventually(async () => (await devices()).status === 200, 'the API after the black hole', 30000, 250);
  await eventually(async () => (await env.hub.request('GET', '/readyz')).status === 200, '/readyz after the black hole', 30000, 250);
  t.diagnostic(`API and /readyz back ${Date.now() - back} ms after the link`);
  assert.match(env.hub.log(), /database unreachable \((no answer within the transaction deadline|.*timeout expired)/);
  assert.match(env.hub.log(), /database reachable again/);
});

test('half-open link (black hole): the event listener notices, reconnects when the link returns, and events flow again', {
  timeout: 120000,
}, async (t) => {
  // A LISTEN connection that only waits is never woken by a black hole: after 10 s without a
  // notification the listener asks the server something, and drops the connection when no answer
  // comes within the transaction deadline (db/notifications.cpp). Without that, notifications from
  // other nodes would stop for good on this one, with nothing noticing.
  //
  // The earlier black holes may have cost the listener its connection too: first make sure it is
  // back (a push arrives), so that the log lines below are this test's own. The hub's log reaches
  // this process through a pipe, a little behind, hence the pause.
  const identified = () => device.pushes.filter((p) => p.event === 'identify').length;
  await eventually(async () => {
    if ((await identify()).status !== 200) return false;
    await sleep(1000);
    return identified() > 0;
  }, 'an identify push before the black hole', 30000, 0);
  await sleep(500);
  const pushedBefore = identified();
  const from = env.hub.log().length;
  const since = () => env.hub.log().slice(from);
  const noticed = /event listener disconnected \(no answer to the liveness probe[^\n]*\n/;
  const started = Date.now();
  env.proxy.setMode('blackhole');
  try {
    await eventually(() => noticed.test(since()),
      'the event listener noticing the black hole', 10000 + 1000 * TRANSACTION_TIMEOUT_S + 5000, 250);
    t.diagnostic(`black hole noticed by the event listener after ${Date.now() - started} ms`);
  } finally {
    env.proxy.setMode('up');
  }
  const afterNotice = () => {
    const log = since();
    const match = noticed.exec(log);
    return log.slice(match.index + match[0].length);
  };
  await eventually(() => /event listener reconnected/.test(afterNotice()), 'the event listener reconnecting', 30000, 250);
  // A push travels through NOTIFY only: it reaches the device once the listener is back.
  await eventually(async () => (await identify()).status === 200, 'the identify request after the black hole', 30000, 500);
  await eventually(() => identified() > pushedBefore, 'the identify push after the black hole', 5000, 50);
  assert.ok(device.isConnected());
});
