'use strict';
// Set-up shared by the database fault tests (db_outage, db_proxy): a hub whose PostgreSQL link
// goes through a FaultProxy, a product `demo` with signed firmware 1.0.0 and 2.0.0, and a CA
// whose devices are JIT-provisioned into it.
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { startHub, createDatabase, dropDatabase, runBin } = require('./hub');
const { TestPki } = require('./pki');
const { DeviceFixture } = require('./device_fixture');
const { FaultProxy } = require('./fault_proxy');

const fixtures = path.join(__dirname, '..', '..', 'fixtures', 'fwup');
const expected = JSON.parse(fs.readFileSync(path.join(fixtures, 'expected.json'), 'utf8'));
const uuidOf = (file) => expected[file].metadata['meta-uuid'];

/**
 * Starts PostgreSQL-behind-a-proxy hub. Returns {hub, fx, pki, proxy, db, psql(sql), ca, V1, V2,
 * stop()}; `psql` goes straight to PostgreSQL (not through the proxy).
 */
async function startProxiedHub({ env = {}, devicesTag = 'outage' } = {}) {
  const pg = new URL(process.env.OTAHUB_TEST_DATABASE_URL);
  const proxy = await FaultProxy.start(pg.hostname, Number(pg.port || 5432));
  const db = createDatabase('otahub_fault');
  // Synchronous child processes go straight to PostgreSQL: the proxy runs in this event loop.
  const direct = { PATH: process.env.PATH, OTAHUB_DATABASE_URL: db.url,
    ASAN_OPTIONS: process.env.ASAN_OPTIONS || '', UBSAN_OPTIONS: process.env.UBSAN_OPTIONS || '' };
  runBin('otahubd', ['migrate'], direct);
  const admin = { email: 'admin@example.com', password: 'correct horse battery', org: 'acme' };
  runBin('otahubd', ['create-user', '--email', admin.email, '--password', admin.password, '--org', admin.org], direct);
  const hub = await startHub({ database: { name: db.name, url: proxy.url(db.url) }, env, admin: null });
  hub.admin = admin;
  const token = await hub.login(admin.email, admin.password);
  const pki = new TestPki();
  const fx = new DeviceFixture(hub, token, pki);
  const psql = (sql) => execFileSync('psql', [db.url, '-qAt', '-v', 'ON_ERROR_STOP=1', '-c', sql])
    .toString().trim();
  const must = async (method, url, body, status) => {
    const res = await fx.api(method, url, body);
    if (res.status !== status) throw new Error(`${method} ${url}: ${res.status} ${res.text}`);
    return res.body && res.body.data;
  };
  await must('POST', '/api/orgs/acme/products', { name: 'demo' }, 201);
  const key = fs.readFileSync(path.join(fixtures, 'signing.pub'), 'utf8').trim();
  await must('POST', '/api/orgs/acme/keys', { name: 'release', key }, 201);
  for (const file of ['demo-1.0.0.fw', 'demo-2.0.0.fw']) {
    const res = await hub.request('POST', '/api/orgs/acme/products/demo/firmwares', {
      token, raw: fs.readFileSync(path.join(fixtures, file)),
      headers: { 'content-type': 'application/octet-stream' },
    });
    if (res.status !== 201) throw new Error(`upload ${file}: ${res.status} ${res.text}`);
  }
  const ca = pki.root(`${devicesTag} CA`);
  await fx.registerCa(ca, { jitp: { product_name: 'demo', tags: [devicesTag], description: devicesTag } });
  return {
    hub, fx, pki, proxy, db, psql, ca, must,
    V1: uuidOf('demo-1.0.0.fw'),
    V2: uuidOf('demo-2.0.0.fw'),
    /** Throws with the hub's log when otahubd is no longer running. */
    assertAlive() {
      if (hub.child.exitCode !== null || hub.child.signalCode !== null) {
        throw new Error(`otahubd died (exit ${hub.child.exitCode}, signal ${hub.child.signalCode}):\n` +
          hub.log().split('\n').slice(-40).join('\n'));
      }
    },
    async stop() {
      proxy.setMode('up');
      const died = hub.child.signalCode !== null;
      if (died) console.error(`otahubd died with ${hub.child.signalCode}:\n${hub.log().split('\n').slice(-60).join('\n')}`);
      let stuck = null;
      if (died) {
        fs.rmSync(hub.dir, { recursive: true, force: true });  // hub.stop() would wait for an exit already seen
      } else {
        // A shutdown that hangs is a finding, not a reason to hang the suite: 20 s, then SIGKILL.
        const exited = new Promise((r) => hub.child.once('exit', r));
        hub.child.kill('SIGTERM');
        const timer = setTimeout(() => {
          stuck = hub.log().split('\n').slice(-60).join('\n');
          hub.child.kill('SIGKILL');
        }, 20000);
        await exited;
        clearTimeout(timer);
        await hub.stop();
      }
      await proxy.stop();
      dropDatabase(db.name);
      pki.cleanup();
      if (stuck) throw new Error(`otahubd did not exit within 20 s of SIGTERM; its log ends:\n${stuck}`);
    },
  };
}

/** Resolves after `ms`. */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs `fn`; resolves {ms, value} or {ms, error}, never rejects. */
async function timed(fn) {
  const started = Date.now();
  try {
    const value = await fn();
    return { ms: Date.now() - started, value };
  } catch (error) {
    return { ms: Date.now() - started, error };
  }
}

module.exports = { startProxiedHub, sleep, timed, uuidOf };
