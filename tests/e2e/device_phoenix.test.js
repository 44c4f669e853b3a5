'use strict';
// A NervesHubLink-shaped device (the official Phoenix JS client over mutual TLS) against a real
// hub: join with firmware metadata, heartbeat, device events, the device row through the API,
// protocol errors, malformed frames, session replacement, and endpoint paths.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const WebSocket = require('ws');
const { startDeviceFixture, eventually } = require('./lib/device_fixture');
const { nervesHubLinkJoinPayload } = require('./lib/device_client');

let f;
let root;

before(async () => {
  f = await startDeviceFixture();
  root = f.pki.root('Phoenix Root');
  await f.registerCa(root, { jitp: { product_name: 'sensor', tags: ['field'], description: 'jit' } });
});

after(async () => {
  if (f) {
    await f.hub.stop();
    f.pki.cleanup();
  }
});

/** A raw `ws` client with the device certificate: frames by hand, close codes visible. */
function rawSocket(leaf, path = '/socket/websocket?vsn=2.0.0', options = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://localhost:${f.hub.devicePort}${path}`, {
      cert: leaf.chainPem, key: leaf.keyPem, ca: f.serverCa, perMessageDeflate: false, ...options,
    });
    const inbox = [];
    const waiters = [];
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? data : data.toString();
      const waiter = waiters.shift();
      if (waiter) waiter(text); else inbox.push(text);
    });
    ws.closed = new Promise((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
    ws.next = (ms = 5000) => new Promise((res, rej) => {
      if (inbox.length) { res(inbox.shift()); return; }
      const timer = setTimeout(() => rej(new Error('no frame')), ms);
      waiters.push((t) => { clearTimeout(timer); res(t); });
    });
    ws.on('open', () => resolve(ws));
    ws.on('error', reject);
  });
}

test('device joins with a NervesHubLink payload, heartbeats, and the API shows its firmware', async () => {
  const leaf = root.issueLeaf({ cn: 'phx-1' });
  const uuid = crypto.randomUUID();
  const device = await f.connect(leaf, {
    joinPayload: nervesHubLinkJoinPayload({ uuid, version: '1.2.3', product: 'sensor_fw', platform: 'rpi4', architecture: 'aarch64', firmwareValidated: false }),
  });
  assert.deepEqual(device.joinResponse, {});
  const rtt = await device.ping();
  assert.ok(rtt >= 0);

  const row = await f.device('phx-1');
  assert.equal(row.online, true);
  assert.equal(row.connection_status, 'connected');
  assert.equal(row.version, '1.2.3');
  assert.equal(row.firmware_uuid, uuid);
  assert.equal(row.platform, 'rpi4');
  assert.equal(row.architecture, 'aarch64');
  assert.equal(row.firmware_metadata.uuid, uuid);
  assert.equal(row.firmware_metadata.product, 'sensor_fw');
  assert.equal(row.firmware_metadata.author, 'The Nerves Team');
  assert.equal(row.firmware_metadata.fwup_version, '1.13.0');
  assert.equal(row.firmware_metadata.application_part0_devpath, '/dev/mmcblk0p3');
  assert.equal(row.device_api_version, '2.3.0');
  assert.equal(row.firmware_validation_status, 'not_validated');
  assert.ok(row.last_communication);
  assert.deepEqual(row.tags, ['field']);

  // Device events are stored, never answered.
  device.push('status_update', { status: 'received' });
  device.push('fwup_progress', { stage: 'downloading', value: 42 });
  device.push('connection_types', { values: ['wifi', 'ethernet'] });
  device.push('firmware_validated', {});
  device.push('rebooting', {});
  await eventually(async () => {
    const d = await f.device('phx-1');
    return d.update_status && d.update_status.progress === 42 && d.firmware_validation_status === 'validated' &&
      d.connection_types.length === 2 ? d : null;
  }, 'events stored');
  const d = await f.device('phx-1');
  assert.equal(d.update_status.status, 'updating', 'progress after received means updating');
  assert.equal(d.update_status.stage, 'downloading');
  assert.deepEqual(d.connection_types, ['wifi', 'ethernet']);
  const replies = device.frames.filter((m) => m.event === 'phx_reply' && m.topic === 'device');
  assert.equal(replies.length, 1, 'only the join was answered');

  // rescheduled: delay_for is in minutes.
  device.push('status_update', { status: 'rescheduled', delay_for: 30, reason: 'busy' });
  const blocked = await eventually(async () => {
    const x = await f.device('phx-1');
    return x.updates_blocked_until ? x : null;
  }, 'updates_blocked_until');
  const minutes = (Date.parse(blocked.updates_blocked_until) - Date.now()) / 60000;
  assert.ok(minutes > 28 && minutes <= 30.1, `blocked for ${minutes} minutes`);

  await device.close();
  await eventually(async () => !(await f.device('phx-1')).online, 'offline after close');
  assert.equal((await f.device('phx-1')).connection_status, 'disconnected');
});

test('unknown topic join gets an error reply and the socket stays up', async () => {
  const leaf = root.issueLeaf({ cn: 'phx-topics' });
  const device = await f.connect(leaf);
  const other = device.socket.channel('firmware:1234', {});
  const reply = await new Promise((resolve) => {
    other.join().receive('ok', (r) => resolve({ ok: r })).receive('error', (r) => resolve({ error: r }))
      .receive('timeout', () => resolve({ timeout: true }));
  });
  assert.deepEqual(reply, { error: { reason: 'unmatched topic' } });
  other.leave();
  assert.ok((await device.ping()) >= 0, 'socket still up');
  const r = await device.request('not_a_real_event', {}, 1000);
  assert.equal(r.status, 'timeout', 'device events are never answered');
  await device.close();
});

test('raw frames: before join, null join_ref after join, malformed JSON (1007), oversized (1009), binary (1003)', async () => {
  const leaf = root.issueLeaf({ cn: 'phx-raw' });
  let ws = await rawSocket(leaf);
  ws.send(JSON.stringify(['1', '1', 'device', 'status_update', { status: 'received' }]));
  assert.deepEqual(JSON.parse(await ws.next()), ['1', '1', 'device', 'phx_reply', { status: 'error', response: { reason: 'unmatched topic' } }]);
  ws.send(JSON.stringify(['2', '2', 'device', 'phx_join', nervesHubLinkJoinPayload()]));
  assert.deepEqual(JSON.parse(await ws.next()), ['2', '2', 'device', 'phx_reply', { status: 'ok', response: {} }]);
  // Legacy clients send a null join_ref after the join; heartbeat refs may be integers.
  ws.send(JSON.stringify([null, '3', 'device', 'fwup_progress', { value: 7 }]));
  ws.send(JSON.stringify([null, 4, 'phoenix', 'heartbeat', {}]));
  assert.deepEqual(JSON.parse(await ws.next()), [null, '4', 'phoenix', 'phx_reply', { status: 'ok', response: {} }]);
  await eventually(async () => (await f.device('phx-raw')).update_status?.progress === 7, 'null join_ref event stored');
  ws.send('{"not": "a frame"');
  assert.equal((await ws.closed).code, 1007);

  ws = await rawSocket(leaf);
  ws.send(JSON.stringify(['1', '1', 'device', 'phx_join', { blob: 'x'.repeat((1 << 20) + 10) }]));
  assert.equal((await ws.closed).code, 1009);

  ws = await rawSocket(leaf);
  ws.send(Buffer.from([1, 2, 3]));
  assert.equal((await ws.closed).code, 1003);

  ws = await rawSocket(leaf);
  ws.send(JSON.stringify([null, null, 'phoenix', 'heartbeat', {}, 'extra']));
  assert.equal((await ws.closed).code, 1007);

  ws = await rawSocket(leaf);
  ws.send(`[null,"1","device","x",${'['.repeat(100)}${']'.repeat(100)}]`);
  assert.ok([1007, 1008].includes((await ws.closed).code));

  // The hub is still fine.
  const device = await f.connect(leaf);
  assert.ok((await device.ping()) >= 0);
  await device.close();
});

test('a second connection of the same device closes the first', async () => {
  const leaf = root.issueLeaf({ cn: 'phx-dup' });
  const first = await f.connect(leaf);
  const second = await f.connect(leaf);
  const closed = await first.waitForClose(3000);
  assert.equal(closed.code, 1000);
  assert.ok((await second.ping()) >= 0, 'the newer connection stays');
  await first.close();
  assert.equal((await f.device('phx-dup')).online, true);
  await second.close();
});

test('deleting a device closes its live session and refuses it afterwards', async () => {
  const leaf = root.issueLeaf({ cn: 'phx-delete' });
  const device = await f.connect(leaf);
  const res = await f.api('DELETE', '/api/orgs/acme/products/sensor/devices/phx-delete');
  assert.equal(res.status, 204);
  assert.equal((await device.waitForClose(2000)).code, 1008);
  await device.close();
  assert.equal(await f.device('phx-delete'), null);
  const r = await f.upgrade(leaf);
  assert.equal(r.status, 403);
  assert.equal(r.headers['nh-connection-error-reason'], 'device deleted');
  // Registering it again through the API brings it back.
  const again = await f.api('POST', '/api/orgs/acme/products/sensor/devices', { identifier: 'phx-delete' });
  assert.equal(again.status, 201, again.text);
  assert.equal((await f.upgrade(leaf)).status, 101);
});

test('paths and serializer versions', async () => {
  const leaf = root.issueLeaf({ cn: 'phx-paths' });
  assert.equal((await f.upgrade(leaf, { path: '/socket/websocket' })).status, 101, 'no vsn means 2.0.0');
  assert.equal((await f.upgrade(leaf, { path: '/device-socket/websocket?vsn=2.0.0' })).status, 101);
  const v3 = await f.upgrade(leaf, { path: '/socket/websocket?vsn=3.0.0' });
  assert.equal(v3.status, 400);
  const v1 = await f.upgrade(leaf, { path: '/socket/websocket?vsn=1.0.0' });
  assert.equal(v1.status, 400);
  assert.equal((await f.upgrade(leaf, { path: '/api/whatever' })).status, 404);
  assert.equal((await f.upgrade(leaf, { path: '/socket/websocket?vsn=2.0.0', headers: { upgrade: null, connection: 'close' } })).status, 400);
  const big = await f.upgrade(leaf, { headers: { 'x-filler': 'a'.repeat(16 * 1024) } });
  assert.equal(big.status, 431);
  const tls12 = await f.upgrade(leaf, { maxVersion: 'TLSv1.2' });
  assert.equal(tls12.status, 101);
  assert.equal(tls12.tlsProtocol, 'TLSv1.2');
  const tls11 = await f.upgrade(leaf, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1' });
  assert.equal(tls11.status, null, 'TLS 1.1 refused');
});
