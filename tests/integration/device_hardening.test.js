'use strict';
// Device endpoint limits: handshake deadline, slow upgrade requests, idle timeout, admission
// rate limit.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const tls = require('node:tls');
// `ws` lives in tests/e2e/node_modules (ctest also sets NODE_PATH there).
const WebSocket = require('node:module').createRequire(require.resolve('../e2e/lib/device_client'))('ws');
const { startDeviceFixture, eventually } = require('../e2e/lib/device_fixture');

let f;
let root;

before(async () => {
  f = await startDeviceFixture({
    env: { OTAHUB_HANDSHAKE_TIMEOUT: '1', OTAHUB_DEVICE_IDLE_TIMEOUT: '5' },
  });
  root = f.pki.root('Hardening Root');
  await f.registerCa(root, { jitp: { product_name: 'sensor', tags: [], description: '' } });
});

after(async () => {
  if (f) {
    await f.hub.stop();
    f.pki.cleanup();
  }
});

function closedWithin(socket) {
  const started = Date.now();
  return new Promise((resolve) => {
    socket.on('error', () => {});
    socket.on('close', () => resolve(Date.now() - started));
  });
}

test('a TCP connection that never starts TLS is closed at the handshake deadline', async () => {
  const socket = net.connect(f.hub.devicePort, '127.0.0.1');
  const elapsed = await closedWithin(socket);
  assert.ok(elapsed >= 800 && elapsed < 4000, `closed after ${elapsed} ms`);
});

test('an upgrade request sent byte by byte is cut off at the same deadline', async () => {
  const leaf = root.issueLeaf({ cn: 'hard-slow' });
  const socket = tls.connect({ host: 'localhost', port: f.hub.devicePort, cert: leaf.chainPem, key: leaf.keyPem, ca: f.serverCa });
  const closed = closedWithin(socket);
  await new Promise((r) => socket.once('secureConnect', r));
  const request = 'GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n';
  let i = 0;
  const timer = setInterval(() => {
    if (i < request.length && !socket.destroyed) socket.write(request[i++]);
  }, 100);
  const elapsed = await closed;
  clearInterval(timer);
  assert.ok(elapsed < 4000, `closed after ${elapsed} ms`);
  assert.ok(i < request.length, 'the request never completed');
});

test('a session without frames is closed after the idle timeout and goes offline', async () => {
  const leaf = root.issueLeaf({ cn: 'hard-idle' });
  const ws = new WebSocket(`wss://localhost:${f.hub.devicePort}/socket/websocket?vsn=2.0.0`, {
    cert: leaf.chainPem, key: leaf.keyPem, ca: f.serverCa,
  });
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  const opened = Date.now();
  const closed = await new Promise((resolve) => ws.on('close', (code) => resolve(code)));
  const elapsed = Date.now() - opened;
  assert.ok(elapsed >= 4500 && elapsed < 9000, `closed after ${elapsed} ms (idle timeout 5 s)`);
  assert.ok([1006, 1001, 1000].includes(closed), `close code ${closed}`);
  await eventually(async () => (await f.device('hard-idle')).online === false, 'offline');
  assert.match(f.hub.log(), /device=hard-idle disconnected: idle timeout/);
});

test('frames keep a session alive past the idle timeout', async () => {
  const leaf = root.issueLeaf({ cn: 'hard-busy' });
  const device = await f.connect(leaf, { heartbeatIntervalMs: 1000 });
  await new Promise((r) => setTimeout(r, 6500));
  assert.ok((await device.ping()) >= 0, 'still connected after 6.5 s of heartbeats');
  assert.equal(device.closes.length, 0);
  await device.close();
});

test('the admission rate limit refuses handshakes beyond N per second, with a log line', async () => {
  const limited = await startDeviceFixture({ env: { OTAHUB_HANDSHAKE_RATE_LIMIT: '3' } });
  try {
    const ca = limited.pki.root('Limited Root');
    await limited.registerCa(ca, { jitp: { product_name: 'sensor', tags: [], description: '' } });
    // Let the admission window roll over after registration probes.
    await new Promise((r) => setTimeout(r, 1100));
    const leaf = ca.issueLeaf({ cn: 'hard-rate' });
    const results = await Promise.all(Array.from({ length: 12 }, () => limited.upgrade(leaf, { path: '/nowhere' })));
    const answered = results.filter((r) => r.status !== null).length;
    const refused = results.filter((r) => r.status === null).length;
    assert.ok(answered >= 1 && answered <= 6, `answered ${answered}`);
    assert.ok(refused >= 6, `refused ${refused}`);
    await eventually(async () => /handshake rate limit of 3\/s reached/.test(limited.hub.log()), 'the rate-limit log line');
  } finally {
    await limited.hub.stop();
    limited.pki.cleanup();
  }
});
