'use strict';
// Overload (issue 5, Faults): far more TLS handshakes per second than the hub can serve. The
// flood replays a real ClientHello on fresh TCP connections, so each attempt costs the hub a full
// ECDHE handshake and the client almost nothing. The hub must shed the excess (the per-node
// admission limit OTAHUB_HANDSHAKE_RATE_LIMIT, the listen backlog and the handshake deadline),
// keep its memory bounded, keep already-connected devices served (heartbeats answered), and
// let new devices in again once the flood stops.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const tls = require('node:tls');
const { startDeviceFixture } = require('../e2e/lib/device_fixture');
const { rssKiB, processAlive } = require('./hostile_support');

const FLOOD_MS = Number(process.env.OTAHUB_OVERLOAD_SECONDS || 10) * 1000;
const CONCURRENCY = 800;      // connections in the air at any time
const RATE_LIMIT = 100;       // handshakes admitted per second
const RSS_BOUND_KIB = 256 * 1024;

let fx;
let ca;
const open = [];

before(async () => {
  fx = await startDeviceFixture({ env: {
    OTAHUB_HANDSHAKE_RATE_LIMIT: String(RATE_LIMIT),
    OTAHUB_HANDSHAKE_TIMEOUT: '3',
  } });
  ca = fx.pki.root('Overload CA');
  await fx.registerCa(ca, { jitp: { product_name: 'sensor', tags: ['overload'], description: 'overload' } });
});

after(async () => {
  for (const device of open) await device.close().catch(() => {});
  if (fx) await fx.hub.stop();
  if (fx) fx.pki.cleanup();
});

/** The bytes of a TLS ClientHello for the device endpoint, captured from Node's TLS client. */
function captureClientHello() {
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      socket.once('data', (data) => {
        resolve(data);
        socket.destroy();
        server.close();
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const client = tls.connect({ host: '127.0.0.1', port: server.address().port, servername: 'localhost',
        rejectUnauthorized: false });
      client.on('error', () => {});
    });
    server.on('error', reject);
  });
}

/** One flood attempt: connect, send the ClientHello, classify what comes back. */
function attempt(port, hello) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let outcome = null;
    const finish = (what) => {
      if (outcome) return;
      outcome = what;
      clearTimeout(timer);
      socket.destroy();
      resolve(what);
    };
    const timer = setTimeout(() => finish('timeout'), 5000);
    socket.on('connect', () => socket.write(hello));
    socket.on('data', (data) => finish(data[0] === 0x16 ? 'served' : 'other'));
    socket.on('error', (err) => finish(err.code === 'ECONNREFUSED' ? 'refused' : 'reset'));
    socket.on('close', () => finish('closed'));
  });
}

test('a handshake flood is shed with bounded memory; connected devices stay served; the hub recovers', { timeout: FLOOD_MS + 90000 }, async (t) => {
  const pid = fx.hub.child.pid;
  const device = await fx.connect(ca.issueLeaf({ cn: 'overload-connected' }), { heartbeatIntervalMs: 60000 });
  open.push(device);
  const hello = await captureClientHello();
  const rssBefore = rssKiB(pid);

  const counts = { served: 0, closed: 0, reset: 0, refused: 0, timeout: 0, other: 0 };
  let attempts = 0;
  let peakRss = rssBefore;
  const pings = [];
  const stopAt = Date.now() + FLOOD_MS;
  const worker = async () => {
    while (Date.now() < stopAt) {
      attempts += 1;
      counts[await attempt(fx.hub.devicePort, hello)] += 1;
    }
  };
  const watcher = async () => {
    while (Date.now() < stopAt) {
      peakRss = Math.max(peakRss, rssKiB(pid));
      const started = Date.now();
      await device.ping(10000);
      pings.push(Date.now() - started);
      await new Promise((r) => setTimeout(r, 250));
    }
  };
  await Promise.all([watcher(), ...Array.from({ length: CONCURRENCY }, worker)]);
  peakRss = Math.max(peakRss, rssKiB(pid));
  const perSecond = Math.round(attempts / (FLOOD_MS / 1000));
  t.diagnostic(`${attempts} attempts (${perSecond}/s): ${JSON.stringify(counts)}; ` +
    `RSS ${rssBefore} KiB before, peak ${peakRss} KiB; heartbeat p50 ${pings.sort((a, b) => a - b)[pings.length >> 1]} ms, ` +
    `max ${pings[pings.length - 1]} ms over ${pings.length}`);

  assert.ok(processAlive(pid) && fx.hub.child.exitCode === null, 'otahubd survived');
  assert.ok(perSecond > 2 * RATE_LIMIT, `the flood exceeded the limit (${perSecond}/s)`);
  assert.ok(counts.served > 0, 'some handshakes were served');
  assert.ok(counts.served <= (FLOOD_MS / 1000 + 1) * RATE_LIMIT, `served ${counts.served}: the admission limit held`);
  assert.ok(counts.closed + counts.reset + counts.refused > 0, 'the excess was shed');
  assert.ok(peakRss - rssBefore < RSS_BOUND_KIB, `RSS grew by ${peakRss - rssBefore} KiB`);
  assert.ok(pings.length > 0 && device.isConnected(), 'the connected device stayed connected');
  assert.ok(pings[pings.length - 1] < 5000, 'its heartbeats were answered within 5 s');

  // Recovery: a new device joins within a few seconds of the end of the flood.
  const started = Date.now();
  let late;
  for (;;) {
    try {
      late = await fx.connect(ca.issueLeaf({ cn: 'overload-late' }), { connectTimeoutMs: 5000 });
      break;
    } catch (err) {
      if (Date.now() - started > 15000) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  open.push(late);
  t.diagnostic(`a new device joined ${Date.now() - started} ms after the flood`);
  assert.ok(late.isConnected());
  assert.equal((await fx.device('overload-late')).identifier, 'overload-late');
});
