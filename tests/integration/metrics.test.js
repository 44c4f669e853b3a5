'use strict';
// GET /metrics after known device traffic, and /readyz flipping while the database link is cut
// (through a TCP proxy in front of PostgreSQL) and recovering after.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { startHub, createDatabase, dropDatabase, runBin } = require('../e2e/lib/hub');
const { TestPki } = require('../e2e/lib/pki');
const { DeviceFixture, eventually } = require('../e2e/lib/device_fixture');
const { sample } = require('../e2e/lib/metrics');

/** A TCP proxy to PostgreSQL that can be cut (every link reset, new ones refused) and restored. */
class PgProxy {
  constructor(target) {
    this.target = target;
    this.sockets = new Set();
    this.cut = false;
    this.server = net.createServer((client) => {
      if (this.cut) { client.destroy(); return; }
      const upstream = net.connect(target.port, target.host);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {});
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
  }
  listen() { return new Promise((r) => this.server.listen(0, '127.0.0.1', () => r(this.server.address().port))); }
  outage() { this.cut = true; for (const s of this.sockets) s.destroy(); }
  restore() { this.cut = false; }
  close() { this.outage(); return new Promise((r) => this.server.close(r)); }
}

let fx;
let pki;
let proxy;
let db;

/** Value of one sample line `name{labels} value` (labels given exactly as rendered), or null. */
async function scrape() {
  const res = await fx.hub.request('GET', '/metrics');
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'], /^text\/plain/);
  return res.text;
}

before(async () => {
  db = createDatabase();
  const url = new URL(db.url);
  proxy = new PgProxy({ host: url.hostname, port: Number(url.port) });
  const port = await proxy.listen();
  url.port = String(port);
  // Set-up goes straight to PostgreSQL: runBin blocks this process, and with it the proxy.
  const direct = { PATH: process.env.PATH, OTAHUB_DATABASE_URL: db.url };
  runBin('otahubd', ['migrate'], direct);
  const admin = { email: 'admin@example.com', password: 'correct horse battery', org: 'acme' };
  runBin('otahubd', ['create-user', '--email', admin.email, '--password', admin.password, '--org', admin.org], direct);
  const hub = await startHub({ database: db, admin: null, env: { OTAHUB_DATABASE_URL: url.toString() } });
  const token = await hub.login(admin.email, admin.password);
  pki = new TestPki();
  fx = new DeviceFixture(hub, token, pki);
  assert.equal((await fx.api('POST', '/api/orgs/acme/products', { name: 'sensor' })).status, 201);
});

after(async () => {
  if (fx) await fx.hub.stop({ keepDatabase: true });
  if (proxy) await proxy.close();
  if (db) dropDatabase(db.name);
  if (pki) pki.cleanup();
});

test('/metrics needs no token and counts handshakes, JIT provisioning, joins, frames and sessions', async () => {
  const before = await scrape();
  assert.equal(sample(before, 'otahub_device_sessions'), 0);
  const root = pki.root('Metrics Root');
  await fx.registerCa(root, { jitp: { product_name: 'sensor', tags: [], description: '' } });
  const device = await fx.connect(root.issueLeaf({ cn: 'metrics-1' }));
  await device.ping();
  const stranger = pki.root('Stranger Root').issueLeaf({ cn: 'metrics-2' });
  assert.equal((await fx.upgrade(stranger)).alert, 'unknown ca');

  const text = await eventually(async () => {
    const t = await scrape();
    // The join is counted, then the rollout engine records the joined device: wait for both.
    return sample(t, 'otahub_device_joins_total') >= 1 && sample(t, 'otahub_device_joined') === 1 ? t : null;
  }, 'join counted');
  assert.equal(sample(text, 'otahub_device_handshakes_total', '{reason="ok",result="accepted"}'), 1);
  assert.ok(sample(text, 'otahub_device_handshakes_total', '{reason="unknown_ca",result="refused"}') >= 1);
  assert.equal(sample(text, 'otahub_jitp_devices_total'), 1);
  // A TLS 1.3 device: its records run in the hub, OpenSSL's connection state is freed.
  assert.equal(sample(text, 'otahub_device_tls_records_total', '{layer="hub"}'), 1);
  assert.equal(sample(text, 'otahub_device_joins_total'), 1);
  assert.ok(sample(text, 'otahub_device_frames_total', '{direction="in"}') >= 2, 'join + heartbeat');
  assert.ok(sample(text, 'otahub_device_frames_total', '{direction="out"}') >= 2);
  assert.equal(sample(text, 'otahub_device_sessions'), 1);
  assert.equal(sample(text, 'otahub_device_joined'), 1);
  assert.equal(sample(text, 'otahub_database_up'), 1);
  assert.ok(sample(text, 'otahub_db_transaction_seconds_count') > 0);
  assert.ok(sample(text, 'otahub_db_pool_wait_seconds_count') > 0);
  await device.close();
  await eventually(async () => sample(await scrape(), 'otahub_device_sessions') === 0, 'session gone');
});

test('/readyz goes 503 while PostgreSQL is unreachable and 200 after; the hub keeps serving', async () => {
  assert.equal((await fx.hub.request('GET', '/readyz')).status, 200);
  proxy.outage();
  const down = await eventually(async () => {
    const r = await fx.hub.request('GET', '/readyz');
    return r.status === 503 ? r : null;
  }, '/readyz 503');
  assert.match(down.body.reason, /database/);
  assert.equal((await fx.hub.request('GET', '/healthz')).status, 200, 'process still up');
  const metrics = await scrape();
  assert.equal(sample(metrics, 'otahub_database_up'), 0);
  // An API call that needs the database is a clear 503, not a hang.
  const api = await fx.api('GET', '/api/orgs/acme/products');
  assert.equal(api.status, 503, api.text);
  proxy.restore();
  await eventually(async () => (await fx.hub.request('GET', '/readyz')).status === 200, '/readyz 200 again', 15000);
  assert.equal((await fx.api('GET', '/api/orgs/acme/products')).status, 200);
});
