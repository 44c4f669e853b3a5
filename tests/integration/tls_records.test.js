'use strict';
// Who runs a device connection's TLS records (OTAHUB_DEVICE_TLS_RECORDS, issue 8): by default the
// hub takes a TLS 1.3 connection's records over from OpenSSL after the handshake and frees
// OpenSSL's per-connection state; TLS 1.2 connections stay with OpenSSL; "openssl" keeps every
// connection there. Either way a device upgrades, joins, heartbeats and gets a close echoed.
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { startDeviceFixture, eventually } = require('../e2e/lib/device_fixture');
const { sample } = require('../e2e/lib/metrics');

const fixtures = [];

after(async () => {
  for (const f of fixtures) {
    await f.hub.stop();
    f.pki.cleanup();
  }
});

async function records(f) {
  const res = await f.hub.request('GET', '/metrics');
  assert.equal(res.status, 200);
  return {
    hub: sample(res.text, 'otahub_device_tls_records_total', '{layer="hub"}') ?? 0,
    openssl: sample(res.text, 'otahub_device_tls_records_total', '{layer="openssl"}') ?? 0,
  };
}

async function setUp(env) {
  const f = await startDeviceFixture({ env });
  fixtures.push(f);
  const root = f.pki.root('Records Root');
  await f.registerCa(root, { jitp: { product_name: 'sensor', tags: [], description: '' } });
  return { f, root };
}

/** A device session that joins, heartbeats three times and closes cleanly. */
async function fullSession(f, leaf) {
  const device = await f.connect(leaf);
  for (let i = 0; i < 3; i += 1) assert.ok((await device.ping()) >= 0);
  await device.close();
}

test('default: TLS 1.3 devices run on the hub record layer, TLS 1.2 devices on OpenSSL; both are served', async () => {
  const { f, root } = await setUp({});
  await fullSession(f, root.issueLeaf({ cn: 'records-13' }));
  await eventually(async () => (await records(f)).hub === 1, 'the TLS 1.3 connection counted as hub');

  const leaf12 = root.issueLeaf({ cn: 'records-12' });
  const r12 = await f.upgrade(leaf12, { maxVersion: 'TLSv1.2' });
  assert.equal(r12.status, 101, r12.error || r12.body);
  assert.equal(r12.tlsProtocol, 'TLSv1.2');
  await eventually(async () => (await records(f)).openssl === 1, 'the TLS 1.2 connection counted as openssl');
  assert.equal((await records(f)).hub, 1);
  assert.match(f.hub.log(), /device=records-13 connected/);
});

test('OTAHUB_DEVICE_TLS_RECORDS=openssl: every connection stays with OpenSSL and is served the same', async () => {
  const { f, root } = await setUp({ OTAHUB_DEVICE_TLS_RECORDS: 'openssl' });
  await fullSession(f, root.issueLeaf({ cn: 'records-openssl' }));
  await eventually(async () => (await records(f)).openssl === 1, 'counted as openssl');
  assert.equal((await records(f)).hub, 0);
});
