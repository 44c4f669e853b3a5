'use strict';
// Two otahubd nodes on one database: trust changes, revocations and session replacement travel
// over the PostgreSQL event bus; online/offline stays right after a node crash and restart.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { startHub, makeServerCerts, dropDatabase } = require('../e2e/lib/hub');
const { TestPki } = require('../e2e/lib/pki');
const { DeviceFixture, eventually } = require('../e2e/lib/device_fixture');

let certDir;
let certs;
let a;
let b;
let pki;
let root;
let token;

before(async () => {
  certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'otahub-cluster-'));
  certs = makeServerCerts(certDir);
  const hubA = await startHub({ certs, env: { OTAHUB_NODE_ID: 'node-a' } });
  token = await hubA.login();
  const hubB = await startHub({
    certs, database: hubA.db, admin: null,
    env: { OTAHUB_NODE_ID: 'node-b', OTAHUB_SECRET_KEY: hubA.env.OTAHUB_SECRET_KEY },
  });
  pki = new TestPki();
  a = new DeviceFixture(hubA, token, pki);
  b = new DeviceFixture(hubB, token, pki);
  assert.equal((await a.api('POST', '/api/orgs/acme/products', { name: 'sensor' })).status, 201);
  root = pki.root('Cluster Root');
  // Registered through node A; node B learns it through the bus.
  await a.registerCa(root, { jitp: { product_name: 'sensor', tags: [], description: '' } });
  await b.waitForTrust(root, true);
});

after(async () => {
  for (const f of [b, a]) if (f) await f.hub.stop({ keepDatabase: true, signal: 'SIGKILL' });
  if (a) dropDatabase(a.hub.db.name);
  if (pki) pki.cleanup();
  if (certDir) fs.rmSync(certDir, { recursive: true, force: true });
});

test('revoking a certificate through node A closes its session on node B within 1 s', async () => {
  const leaf = root.issueLeaf({ cn: 'cluster-revoke' });
  const device = await b.connect(leaf);
  const started = Date.now();
  const res = await a.api('DELETE', `/api/orgs/acme/products/sensor/devices/cluster-revoke/certificates/${leaf.serial}`);
  assert.equal(res.status, 204);
  const closed = await device.waitForClose(3000);
  const elapsed = Date.now() - started;
  assert.ok(elapsed < 1000, `closed after ${elapsed} ms`);
  assert.equal(closed.code, 1008);
  await device.close();
  await b.waitForAlert(leaf, 'certificate revoked');
  await a.waitForAlert(leaf, 'certificate revoked');
});

test('a new connection on node B closes the older one on node A', async () => {
  const leaf = root.issueLeaf({ cn: 'cluster-dup' });
  const first = await a.connect(leaf);
  const second = await b.connect(leaf);
  const closed = await first.waitForClose(3000);
  assert.equal(closed.code, 1000);
  assert.ok((await second.ping()) >= 0);
  await first.close();
  const row = await eventually(async () => {
    const d = await a.device('cluster-dup');
    return d.online ? d : null;
  }, 'online through node B');
  assert.equal(row.connection_status, 'connected');
  await second.close();
});

test('devices are listed per node: GET …/nodes counts them, ?node= lists them, node in each device', async () => {
  const onA = [root.issueLeaf({ cn: 'per-node-a1' }), root.issueLeaf({ cn: 'per-node-a2' })];
  const onB = [root.issueLeaf({ cn: 'per-node-b1' })];
  const sessions = [];
  for (const leaf of onA) sessions.push(await a.connect(leaf));
  for (const leaf of onB) sessions.push(await b.connect(leaf));
  const list = async (query) => {
    const res = await a.api('GET', `/api/orgs/acme/products/sensor/devices?identifier=per-node-${query}`);
    assert.equal(res.status, 200);
    return res.body.data.map((d) => `${d.identifier}@${d.node}`).sort();
  };
  assert.deepEqual(await list('&node=node-a'), ['per-node-a1@node-a', 'per-node-a2@node-a']);
  assert.deepEqual(await list('&node=node-b'), ['per-node-b1@node-b']);
  assert.deepEqual(await list('&filters[node]=node-b'), ['per-node-b1@node-b']);
  assert.deepEqual(await list('&node=no-such-node'), []);
  const nodes = await b.api('GET', '/api/orgs/acme/nodes');
  assert.equal(nodes.status, 200);
  const byId = Object.fromEntries(nodes.body.data.map((n) => [n.node_id, n]));
  assert.equal(byId['node-a'].alive, true);
  assert.equal(byId['node-b'].alive, true);
  assert.equal(byId['node-b'].this_node, true);
  assert.equal(byId['node-a'].this_node, false);
  assert.ok(byId['node-a'].connected_devices >= 2, JSON.stringify(byId['node-a']));
  assert.ok(byId['node-b'].connected_devices >= 1, JSON.stringify(byId['node-b']));
  // A device that moves to node B is listed there, not on node A any more.
  sessions.push(await b.connect(onA[0]));
  await sessions[0].waitForClose(3000);
  await eventually(async () => {
    const now = await list('&node=node-b');
    return now.includes('per-node-a1@node-b') ? now : null;
  }, 'per-node-a1 listed on node B');
  assert.deepEqual(await list('&node=node-a'), ['per-node-a2@node-a']);
  for (const s of sessions) await s.close();
  const offline = await eventually(async () => {
    const d = await a.device('per-node-b1');
    return d.online ? null : d;
  }, 'per-node-b1 offline');
  assert.equal(offline.node, null);
  // An org the caller does not belong to (or that does not exist): 404, as for every org route.
  assert.equal((await a.api('GET', '/api/orgs/nope/nodes')).status, 404);
});

test('a crashed node\'s devices go offline when it restarts with the same node id', async () => {
  const leaf = root.issueLeaf({ cn: 'cluster-crash' });
  const device = await a.connect(leaf);
  assert.equal((await b.device('cluster-crash')).online, true);
  await a.hub.stop({ signal: 'SIGKILL', keepDatabase: true });
  await device.waitForClose(5000).catch(() => {});
  await device.close();
  // The dead node's connection row still says connected until its heartbeat goes stale (30 s)
  // or the node comes back; a restart with the same id clears it at once.
  const restarted = await startHub({
    certs, database: a.hub.db, admin: null,
    env: { OTAHUB_NODE_ID: 'node-a', OTAHUB_SECRET_KEY: a.hub.env.OTAHUB_SECRET_KEY },
  });
  a = new DeviceFixture(restarted, token, pki);
  const row = await b.device('cluster-crash');
  assert.equal(row.online, false);
  assert.equal(row.connection_status, 'disconnected');
  // And it reconnects through the restarted node.
  const again = await a.connect(leaf);
  assert.equal((await b.device('cluster-crash')).online, true);
  await again.close();
});

test('the event bus reconnects after losing its connection and re-checks live sessions', async () => {
  const leaf = root.issueLeaf({ cn: 'cluster-listener' });
  const device = await b.connect(leaf);
  const reconnects = () => (b.hub.log().match(/event listener reconnected/g) || []).length;
  const before = reconnects();
  execFileSync('psql', [b.hub.db.url, '-q', '-c',
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'otahub_listener' AND datname = current_database() AND pid <> pg_backend_pid()"]);
  // Revoke while node B's listener may be down: either the event or the re-check closes it.
  const res = await a.api('DELETE', `/api/orgs/acme/products/sensor/devices/cluster-listener/certificates/${leaf.serial}`);
  assert.equal(res.status, 204);
  assert.equal((await device.waitForClose(5000)).code, 1008);
  await device.close();
  await eventually(async () => reconnects() > before, 'node B listener to reconnect');
  await b.waitForAlert(leaf, 'certificate revoked');
  // The bus still delivers after the reconnection.
  const other = root.issueLeaf({ cn: 'cluster-listener-2' });
  const second = await b.connect(other);
  assert.equal((await a.api('DELETE', '/api/orgs/acme/products/sensor/devices/cluster-listener-2')).status, 204);
  assert.equal((await second.waitForClose(3000)).code, 1008);
  await second.close();
});
