'use strict';
// Operations: graceful drain on SIGTERM (device sessions closed in batches spread over the drain
// period, exit 0) and SO_REUSEPORT (two otahubd processes sharing one device port).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { startHub, makeServerCerts, dropDatabase } = require('../e2e/lib/hub');
const { TestPki } = require('../e2e/lib/pki');
const { DeviceFixture } = require('../e2e/lib/device_fixture');

async function fixture(env) {
  const hub = await startHub({ env });
  const token = await hub.login();
  const fx = new DeviceFixture(hub, token, new TestPki());
  assert.equal((await fx.api('POST', '/api/orgs/acme/products', { name: 'sensor' })).status, 201);
  const root = fx.pki.root('Drain Root');
  await fx.registerCa(root, { jitp: { product_name: 'sensor', tags: [], description: '' } });
  return { fx, root };
}

function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

test('SIGTERM drains device sessions in batches over the drain period, then exits 0', async () => {
  const drainSeconds = 2;
  const { fx, root } = await fixture({ OTAHUB_DRAIN_SECONDS: String(drainSeconds) });
  try {
    const devices = await Promise.all(Array.from({ length: 20 }, (_, i) => fx.connect(root.issueLeaf({ cn: `drain-${i}` }))));
    const closedAt = devices.map((d) => d.waitForClose(drainSeconds * 1000 + 5000).then((c) => ({ ...c, at: Date.now() })));
    const started = Date.now();
    const code = await fx.hub.stop({ keepDatabase: true });
    const closes = await Promise.all(closedAt);
    assert.equal(code, 0, 'exit status 0');
    for (const c of closes) assert.equal(c.code, 1001, `close code ${c.code} ${c.reason}`);
    const times = closes.map((c) => c.at - started).sort((a, b) => a - b);
    const spread = times[times.length - 1] - times[0];
    assert.ok(spread >= drainSeconds * 1000 * 0.6, `closes spread over ${spread} ms (first ${times[0]} ms)`);
    assert.ok(times[times.length - 1] <= drainSeconds * 1000 + 2000, `last close after ${times[times.length - 1]} ms`);
    for (const d of devices) await d.close().catch(() => {});
  } finally {
    await fx.hub.stop(); // already exited: drops the database
    fx.pki.cleanup();
  }
});

test('with OTAHUB_REUSE_PORT two processes share one device port and both take devices', async () => {
  const port = await freePort();
  const certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'otahub-reuseport-'));
  const certs = makeServerCerts(certDir);
  const shared = { OTAHUB_REUSE_PORT: 'true', OTAHUB_DEVICE_LISTEN: `127.0.0.1:${port}` };
  const a = await startHub({ certs, env: { ...shared, OTAHUB_NODE_ID: 'reuse-a' } });
  const token = await a.login();
  const b = await startHub({
    certs, database: a.db, admin: null,
    env: { ...shared, OTAHUB_NODE_ID: 'reuse-b', OTAHUB_SECRET_KEY: a.env.OTAHUB_SECRET_KEY },
  });
  const pki = new TestPki();
  const fx = new DeviceFixture(a, token, pki);
  const devices = [];
  try {
    assert.equal(a.devicePort, port);
    assert.equal(b.devicePort, port);
    assert.equal((await fx.api('POST', '/api/orgs/acme/products', { name: 'sensor' })).status, 201);
    const root = pki.root('Reuse Root');
    await fx.registerCa(root, { jitp: { product_name: 'sensor', tags: [], description: '' } });
    // Node B learns the CA through the bus; give its trust a moment by connecting until accepted.
    for (let i = 0; i < 24; i += 1) {
      const leaf = root.issueLeaf({ cn: `reuse-${i}` });
      for (let attempt = 0; ; attempt += 1) {
        try {
          devices.push(await fx.connect(leaf));
          break;
        } catch (e) {
          if (attempt > 20) throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
    const nodes = execFileSync('psql', [a.db.url, '-qAt', '-c',
      "SELECT node_id, count(*) FROM device_connections WHERE status = 'connected' GROUP BY node_id ORDER BY node_id"]).toString().trim().split('\n');
    assert.equal(nodes.length, 2, `connections per node: ${nodes.join(' ')}`);
    assert.match(nodes[0], /^reuse-a\|\d+$/);
    assert.match(nodes[1], /^reuse-b\|\d+$/);
  } finally {
    for (const d of devices) await d.close().catch(() => {});
    await b.stop({ keepDatabase: true });
    await a.stop({ keepDatabase: true });
    dropDatabase(a.db.name);
    pki.cleanup();
    fs.rmSync(certDir, { recursive: true, force: true });
  }
});
