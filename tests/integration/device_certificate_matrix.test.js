'use strict';
// The device endpoint's certificate matrix over real TLS and a real database: which client
// certificates are accepted, and how each refusal shows (TLS alert or HTTP status + reason).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startDeviceFixture, eventually } = require('../e2e/lib/device_fixture');

const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;
let f;
let root;       // registered, JITP into product sensor
let strictCa;   // registered, no JITP profile

before(async () => {
  f = await startDeviceFixture();
  root = f.pki.root('Matrix Root');
  await f.registerCa(root, { jitp: { product_name: 'sensor', tags: ['jitp'], description: 'provisioned' } });
  strictCa = f.pki.root('Strict Root');
  await f.registerCa(strictCa);
});

after(async () => {
  if (f) {
    await f.hub.stop();
    f.pki.cleanup();
  }
});

function assertAccepted(r, what) {
  assert.equal(r.status, 101, `${what}: expected an upgrade, got ${JSON.stringify({ status: r.status, alert: r.alert, error: r.error, headers: r.headers })}`);
  assert.equal(r.accepted, true, what);
}

function assertRefused(r, status, reasonPattern, what) {
  assert.equal(r.status, status, `${what}: ${JSON.stringify({ status: r.status, alert: r.alert, error: r.error })}`);
  assert.match(r.headers['nh-connection-error-reason'] ?? '', reasonPattern, what);
}

test('good leaf of a registered JITP CA: accepted, device provisioned on the first connection', async () => {
  const leaf = root.issueLeaf({ cn: 'matrix-good' });
  assertAccepted(await f.upgrade(leaf), 'good leaf');
  const device = await f.device('matrix-good');
  assert.ok(device, 'JITP created the device');
  assert.deepEqual(device.tags, ['jitp']);
  assert.equal(device.description, 'provisioned');
  const certs = await f.api('GET', '/api/orgs/acme/products/sensor/devices/matrix-good/certificates');
  assert.equal(certs.body.data.length, 1);
  assert.equal(certs.body.data[0].serial, leaf.serial);
  assert.equal(certs.body.data[0].fingerprint, leaf.fingerprint);
  // A second connection with the same certificate is a known certificate.
  assertAccepted(await f.upgrade(leaf), 'known certificate');
});

test('leaf issued by an unregistered intermediate of a registered root, chain sent: accepted', async () => {
  const intermediate = root.issueCa('Matrix Intermediate');
  const leaf = intermediate.issueLeaf({ cn: 'matrix-via-intermediate' });
  assertAccepted(await f.upgrade(leaf), 'leaf via intermediate');
  // Without the intermediate in the chain the issuer is unknown.
  const r = await f.upgrade(null, { cert: leaf.certPem, key: leaf.keyPem });
  assert.equal(r.alert, 'unknown ca');
});

test('leaf of a registered intermediate CA: accepted', async () => {
  const otherRoot = f.pki.root('Unregistered Root');
  const intermediate = otherRoot.issueCa('Registered Intermediate');
  await f.registerCa(intermediate, { jitp: { product_name: 'sensor', tags: [], description: '' } });
  assertAccepted(await f.upgrade(intermediate.issueLeaf({ cn: 'matrix-int-ca' })), 'registered intermediate');
});

test('TLS refusals: unknown CA, expired, not yet valid, serverAuth-only, no certificate', async () => {
  const rogue = f.pki.root('Rogue Root');
  const cases = [
    ['unknown CA', rogue.issueLeaf({ cn: 'matrix-good' }), 'unknown ca'],
    ['expired', root.issueLeaf({ cn: 'matrix-expired', notBefore: new Date(Date.now() - 10 * DAY), notAfter: new Date(Date.now() - DAY) }), 'certificate expired'],
    ['not yet valid', root.issueLeaf({ cn: 'matrix-future', notBefore: new Date(Date.now() + DAY), notAfter: new Date(Date.now() + 10 * DAY) }), 'bad certificate'],
    ['serverAuth only', root.issueLeaf({ cn: 'matrix-server-eku', eku: 'server' }), 'unsupported certificate'],
  ];
  for (const [what, leaf, alert] of cases) {
    const r = await f.upgrade(leaf);
    assert.equal(r.status, null, `${what}: no HTTP answer`);
    assert.equal(r.alert, alert, `${what}: ${r.error}`);
    // Also refused with TLS 1.2.
    const r12 = await f.upgrade(leaf, { maxVersion: 'TLSv1.2' });
    assert.equal(r12.alert, alert, `${what} (TLS 1.2): ${r12.error}`);
  }
  const none = await f.upgrade(null);
  assert.equal(none.alert, 'certificate required', none.error);
  const none12 = await f.upgrade(null, { maxVersion: 'TLSv1.2' });
  assert.equal(none12.status, null);
  assert.ok(none12.alert === 'handshake failure' || none12.alert === 'certificate required', none12.error);
  for (const cn of ['matrix-expired', 'matrix-future', 'matrix-server-eku']) {
    assert.equal(await f.device(cn), null, `${cn} was not created`);
  }
  const log = f.hub.log();
  assert.match(log, /refused at TLS: reason=expired serial=\d+ cn=matrix-expired/);
  assert.match(log, /refused at TLS: reason=no_certificate/);
});

test('revoked certificate: refused from then on, and its live session is closed within 1 s', async () => {
  const leaf = root.issueLeaf({ cn: 'matrix-revoked' });
  const device = await f.connect(leaf);
  const started = Date.now();
  const res = await f.api('DELETE', `/api/orgs/acme/products/sensor/devices/matrix-revoked/certificates/${leaf.serial}`);
  assert.equal(res.status, 204, res.text);
  const closed = await device.waitForClose(3000);
  const elapsed = Date.now() - started;
  assert.ok(elapsed < 1000, `session closed after ${elapsed} ms`);
  assert.equal(closed.code, 1008);
  await device.close();
  await f.waitForAlert(leaf, 'certificate revoked');
  const listed = await f.api('GET', '/api/orgs/acme/products/sensor/devices/matrix-revoked/certificates');
  assert.deepEqual(listed.body.data, []);
});

test('disabled device: 403 at the upgrade with nh-connection-error-reason', async () => {
  const leaf = root.issueLeaf({ cn: 'matrix-disabled' });
  assertAccepted(await f.upgrade(leaf), 'before disabling');
  const res = await f.api('PUT', '/api/orgs/acme/products/sensor/devices/matrix-disabled', { disabled: true });
  assert.equal(res.status, 200);
  assert.equal(res.body.data.disabled, true);
  assertRefused(await f.upgrade(leaf), 403, /device disabled/, 'disabled device');
  await f.api('PUT', '/api/orgs/acme/products/sensor/devices/matrix-disabled', { disabled: false });
  assertAccepted(await f.upgrade(leaf), 'enabled again');
  assert.match(f.hub.log(), /upgrade refused: status=403 reason="device disabled" serial=\d+ cn=matrix-disabled/);
});

test('inactive CA: its devices get unknown ca until it is active again', async () => {
  const ca = f.pki.root('Toggle Root');
  const registered = await f.registerCa(ca, { jitp: { product_name: 'sensor', tags: [], description: '' } });
  const leaf = ca.issueLeaf({ cn: 'matrix-toggle' });
  assertAccepted(await f.upgrade(leaf), 'active CA');
  const off = await f.api('PUT', `/api/orgs/acme/ca_certificates/${registered.serial}`, { active: false });
  assert.equal(off.status, 200);
  await f.waitForAlert(leaf, 'unknown ca');
  await f.api('PUT', `/api/orgs/acme/ca_certificates/${registered.serial}`, { active: true });
  await f.waitForTrust(ca, true);
  assertAccepted(await f.upgrade(leaf), 'active again');
});

test('rotation: same CN and same key with a new certificate is accepted and stored', async () => {
  const first = root.issueLeaf({ cn: 'matrix-rotate' });
  assertAccepted(await f.upgrade(first), 'first certificate');
  const second = root.issueLeaf({ cn: 'matrix-rotate', key: first });
  assertAccepted(await f.upgrade(second), 'rotated certificate');
  const certs = await f.api('GET', '/api/orgs/acme/products/sensor/devices/matrix-rotate/certificates');
  assert.deepEqual(certs.body.data.map((c) => c.serial).sort(), [first.serial, second.serial].sort());
  assert.equal(certs.body.data[0].public_key_fingerprint, certs.body.data[1].public_key_fingerprint);
});

test('same CN with a different key is refused (403); a known key under another CN too', async () => {
  const first = root.issueLeaf({ cn: 'matrix-key' });
  assertAccepted(await f.upgrade(first), 'first key');
  assertRefused(await f.upgrade(root.issueLeaf({ cn: 'matrix-key' })), 403, /unexpected public key/, 'new key');
  assertRefused(await f.upgrade(root.issueLeaf({ cn: 'matrix-key-thief', key: first })), 403,
    /common name does not match/, 'known key, other CN');
  assert.equal(await f.device('matrix-key-thief'), null);
});

test('CA without JITP: unknown CN refused (401); a pre-registered device connects', async () => {
  const unknown = strictCa.issueLeaf({ cn: 'matrix-unregistered' });
  assertRefused(await f.upgrade(unknown), 401, /not registered/, 'unknown device without JITP');
  assert.equal(await f.device('matrix-unregistered'), null);

  const created = await f.api('POST', '/api/orgs/acme/products/sensor/devices',
    { identifier: 'matrix-preregistered', tags: ['pre'], description: 'made by API' });
  assert.equal(created.status, 201, created.text);
  assertAccepted(await f.upgrade(strictCa.issueLeaf({ cn: 'matrix-preregistered' })), 'pre-registered');
  const device = await f.device('matrix-preregistered');
  assert.deepEqual(device.tags, ['pre']);
});

test('JITP race: 20 parallel first connections of one CN make one device', async () => {
  const leaf = root.issueLeaf({ cn: 'matrix-race' });
  const results = await Promise.all(Array.from({ length: 20 }, () => f.upgrade(leaf)));
  for (const r of results) {
    assert.ok(r.status === 101 || r.status === null || r.status >= 400, JSON.stringify(r));
    assert.notEqual(r.status, 500);
    assert.equal(r.timedOut, false, 'no hang');
  }
  const accepted = results.filter((r) => r.status === 101).length;
  assert.ok(accepted >= 1, `at least one accepted (${accepted})`);
  const list = await f.api('GET', '/api/orgs/acme/products/sensor/devices?identifier=matrix-race');
  assert.equal(list.body.data.length, 1, JSON.stringify(list.body));
  const certs = await f.api('GET', '/api/orgs/acme/products/sensor/devices/matrix-race/certificates');
  assert.equal(certs.body.data.length, 1);
  // Provisioned (and audited) once, whichever connection won.
  const audit = await f.api('GET', '/api/orgs/acme/audit_logs?action=device.provisioned&target=matrix-race');
  assert.equal(audit.body.data.length, 1, audit.text);
  console.log(`# JITP race: ${accepted}/20 accepted`);
  await eventually(async () => {
    const d = await f.device('matrix-race');
    return d && !d.online;
  }, 'matrix-race to be offline once every raw socket closed');
});
