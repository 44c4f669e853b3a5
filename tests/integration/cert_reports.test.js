'use strict';
// Refused handshakes in aggregate (one row per hour, CA, reason and stage, however many attempts),
// the certificate report, revocation by an imported CRL in the TLS handshake itself, and
// intermediate hub-managed CAs whose devices chain to the org root, against a real otahubd over
// mutual TLS and PostgreSQL.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startDeviceFixture, eventually } = require('../e2e/lib/device_fixture');

const DAY_MS = 24 * 3600 * 1000;
const DEVICES = '/api/orgs/acme/products/sensor/devices';
const JITP = { product_name: 'sensor', tags: [], description: '' };
let f;
let tmp;
let root;    // a custom CA registered with JITP
let good;    // its leaf for device rep-good

function openssl(args, input) {
  return execFileSync('openssl', args, { input, stdio: ['pipe', 'pipe', 'pipe'] });
}

function psql(sql) {
  return execFileSync('psql', [f.hub.db.url, '-qAt', '-v', 'ON_ERROR_STOP=1', '-c', sql]).toString().trim();
}

async function refusals(query = '') {
  const res = await f.api('GET', `/api/orgs/acme/handshake_refusals${query}`);
  assert.equal(res.status, 200, res.text);
  return res.body.data;
}

async function report(query = '') {
  const res = await f.api('GET', `/api/orgs/acme/reports/certificates${query}`);
  assert.equal(res.status, 200, res.text);
  return res.body.data;
}

/** Attempts with `leaf` that must all be refused; returns how many were. */
async function refusedAttempts(leaf, n) {
  for (let i = 0; i < n; i += 1) {
    const r = await f.upgrade(leaf);
    assert.ok(r.alert || r.status === 401 || r.status === 403, `attempt refused: ${JSON.stringify(r)}`);
  }
  return n;
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'otahub-reports-'));
  f = await startDeviceFixture();
  root = f.pki.root('Report Root');
  await f.registerCa(root, { jitp: JITP });
  good = root.issueLeaf({ cn: 'rep-good' });
  assert.equal((await f.upgrade(good)).status, 101, 'JITP provisions rep-good');
});

after(async () => {
  if (f) await f.hub.stop();
  if (f) f.pki.cleanup();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('refused handshakes are counted per hour, CA, reason and stage — one row, not one per attempt', async () => {
  // Expired certificate of a registered CA: refused by a TLS alert, counted under that CA.
  const stale = root.issueLeaf({ cn: 'rep-good', notBefore: new Date(Date.now() - 3 * DAY_MS),
    notAfter: new Date(Date.now() - DAY_MS) });
  assert.equal((await f.upgrade(stale)).alert, 'certificate expired');
  const expired = 1 + await refusedAttempts(stale, 24);

  // A CA the hub does not know, with the CN of one of the org's devices.
  const stranger = f.pki.root('Stranger Root');
  const foreign = stranger.issueLeaf({ cn: 'rep-good' });
  assert.equal((await f.upgrade(foreign)).alert, 'unknown ca');
  await refusedAttempts(foreign, 5);
  // Twelve more names: each row keeps at most ten distinct ones, in order of appearance.
  for (let i = 0; i < 12; i += 1) await refusedAttempts(stranger.issueLeaf({ cn: `scan-${i}` }), 1);

  // One row per hour (two only if the test straddles an hour boundary).
  const rows = await eventually(async () => {
    const list = await refusals('?reason=expired');
    return list.reduce((sum, r) => sum + r.count, 0) === expired ? list : null;
  }, `${expired} expired refusals`, 8000, 200);
  assert.ok(rows.length <= 2, JSON.stringify(rows));
  const [row] = rows;
  assert.equal(row.stage, 'tls');
  assert.equal(row.ca_serial, root.serial);
  assert.deepEqual(row.common_names, ['rep-good']);
  assert.deepEqual(row.serials, [stale.serial]);
  assert.match(row.hour, /T\d{2}:00:00Z$/);
  assert.ok(row.first_at <= row.last_at);
  // In the table: one row per key, the unknown CA counted with no CA and no org.
  assert.equal(psql("SELECT count(*) FROM handshake_refusals WHERE reason = 'expired'"), String(rows.length));
  await eventually(async () => psql("SELECT coalesce(sum(count), 0) FROM handshake_refusals WHERE reason = 'unknown_ca' "
    + 'AND ca_certificate_id = 0 AND org_id IS NULL') === '18', 'unknown_ca counted');
  const names = psql("SELECT array_to_string(common_names, ',') FROM handshake_refusals WHERE reason = 'unknown_ca'");
  if (names.split('\n').length === 1) {
    assert.deepEqual(names.split(','), ['rep-good', ...Array.from({ length: 9 }, (_, i) => `scan-${i}`)]);
  } else {
    assert.ok(names.split('\n').every((line) => line.split(',').length <= 10), names);
  }
  // An org never sees another org's or unknown CAs' rows.
  assert.equal((await refusals('?reason=unknown_ca')).length, 0);
  assert.equal((await refusals(`?ca_serial=${root.serial}&since=2999-01-01`)).length, 0);
  // The trust probe of registerCa (a serverAuth-only leaf) was refused under this CA too.
  const ofRoot = await refusals(`?ca_serial=${root.serial}`);
  assert.deepEqual([...new Set(ofRoot.map((r) => r.reason))].sort(), ['expired', 'invalid_purpose']);
  assert.equal((await f.api('GET', '/api/orgs/acme/handshake_refusals?since=soon')).status, 400);
  assert.equal((await f.hub.request('GET', '/api/orgs/acme/handshake_refusals')).status, 401);
});

test('CRL import: the revoked serial is refused in the TLS handshake (certificate_revoked), counted, and reported', async () => {
  const cnf = path.join(root.dbDir, 'ca.cnf');
  openssl(['ca', '-batch', '-config', cnf, '-cert', root.certFile, '-keyfile', root.keyFile, '-revoke', good.certFile]);
  const crl = openssl(['ca', '-batch', '-config', cnf, '-cert', root.certFile, '-keyfile', root.keyFile,
    '-gencrl', '-crldays', '1']).toString();
  const put = await f.hub.request('PUT', `/api/orgs/acme/ca_certificates/${root.serial}/crl`,
    { token: f.token, raw: crl, headers: { 'content-type': 'application/x-pem-file' } });
  assert.equal(put.status, 200, put.text);

  // Refused from the start (403 at the upgrade until the trust snapshot reloads, then a TLS alert).
  let attempts = 0;
  await eventually(async () => {
    const r = await f.upgrade(good);
    attempts += 1;
    assert.ok(r.status === 403 || r.alert === 'certificate revoked', JSON.stringify(r));
    return r.alert === 'certificate revoked';
  }, 'the CRL to reach the handshake', 5000, 50);
  attempts += await refusedAttempts(good, 30);
  const other = root.issueLeaf({ cn: 'rep-other' });
  assert.equal((await f.upgrade(other)).status, 101, 'serials the CRL does not list still connect');

  const rows = await eventually(async () => {
    const list = await refusals('?reason=revoked');
    const total = list.reduce((sum, r) => sum + r.count, 0);
    return total === attempts ? list : null;
  }, `${attempts} revoked refusals`, 8000, 200);
  assert.ok(rows.length <= 2, `one row per stage at most: ${JSON.stringify(rows)}`);
  assert.ok(rows.some((r) => r.stage === 'tls' && r.ca_serial === root.serial));

  const refused = (await report()).refused_devices;
  const byCategory = (category) => refused.find((r) => r.identifier === 'rep-good' && r.category === category);
  assert.deepEqual(
    (({ product, registered, reason, ca_serial: ca }) => ({ product, registered, reason, ca }))(byCategory('revoked')),
    { product: 'sensor', registered: true, reason: 'revoked', ca: root.serial });
  assert.equal(byCategory('expired').reason, 'expired');
  assert.equal(byCategory('unknown').reason, 'unknown_ca');
  assert.equal(byCategory('unknown').ca_serial, null);
  assert.ok(!refused.some((r) => r.identifier === 'rep-other'));
});

test('certificate report: device certificates and CAs expiring within N days', async () => {
  const ca = await f.api('POST', '/api/orgs/acme/ca_certificates/managed',
    { description: 'short-lived', validity_days: 20, jitp: JITP });
  assert.equal(ca.status, 201, ca.text);
  assert.equal((await f.api('POST', DEVICES, { identifier: 'exp-1' })).status, 201);
  const soon = await f.api('POST', `${DEVICES}/exp-1/certificates/create`, { ca_serial: ca.body.data.serial, validity_days: 5 });
  assert.equal(soon.status, 201, soon.text);
  const later = await f.api('POST', `${DEVICES}/exp-1/certificates/create`, { ca_serial: ca.body.data.serial, validity_days: 15 });
  assert.equal(later.status, 201, later.text);

  const month = await report();
  assert.equal(month.days, 30);
  const certs = month.expiring_certificates.filter((c) => c.identifier === 'exp-1');
  assert.deepEqual(certs.map((c) => c.serial), [soon.body.data.serial, later.body.data.serial], 'soonest first');
  assert.deepEqual(Object.keys(certs[0]).sort(),
    ['ca_serial', 'expired', 'identifier', 'not_after', 'product', 'renew_requested_at', 'replaced', 'serial']);
  assert.equal(certs[0].ca_serial, ca.body.data.serial);
  assert.equal(certs[0].product, 'sensor');
  assert.equal(certs[0].expired, false);
  assert.ok(month.expiring_cas.some((c) => c.serial === ca.body.data.serial && c.managed && !c.expired));
  assert.ok(!month.expiring_cas.some((c) => c.serial === root.serial), 'a 10-year root is not expiring');

  const week = await report('?days=7');
  assert.deepEqual(week.expiring_certificates.filter((c) => c.identifier === 'exp-1').map((c) => c.serial),
    [soon.body.data.serial]);
  assert.ok(!week.expiring_cas.some((c) => c.serial === ca.body.data.serial));
  const none = await report('?days=0');
  assert.ok(!none.expiring_certificates.some((c) => c.identifier === 'exp-1'));
  // A revoked certificate is not "expiring": it is gone.
  const revoked = psql(`UPDATE device_certificates SET revoked_at = now() WHERE serial = '${soon.body.data.serial}' RETURNING 1`);
  assert.equal(revoked, '1');
  assert.ok(!(await report()).expiring_certificates.some((c) => c.serial === soon.body.data.serial));

  for (const bad of ['?days=-1', '?days=x', '?days=100000', '?recent_days=0']) {
    assert.equal((await f.api('GET', `/api/orgs/acme/reports/certificates${bad}`)).status, 400, bad);
  }
  assert.equal((await f.hub.request('GET', '/api/orgs/acme/reports/certificates')).status, 401);
  assert.equal((await f.api('GET', '/api/orgs/nope/reports/certificates')).status, 404);
});

test('intermediate managed CA under an org root: its devices chain to the root and connect', async () => {
  const rootCa = await f.api('POST', '/api/orgs/acme/ca_certificates/managed', { description: 'org root' });
  assert.equal(rootCa.status, 201, rootCa.text);
  assert.equal(rootCa.body.data.parent_serial, null);
  assert.deepEqual(rootCa.body.data.ca_chain, []);
  const inter = await f.api('POST', '/api/orgs/acme/ca_certificates/managed',
    { description: 'line 2', parent_serial: rootCa.body.data.serial, jitp: JITP });
  assert.equal(inter.status, 201, inter.text);
  assert.equal(inter.body.data.parent_serial, rootCa.body.data.serial);
  assert.deepEqual(inter.body.data.ca_chain, [rootCa.body.data.certificate]);
  const interText = openssl(['x509', '-noout', '-text'], inter.body.data.certificate).toString();
  assert.match(interText, /CA:TRUE, pathlen:0/);
  assert.match(interText, /Issuer: CN\s?=\s?acme device CA/);

  // Unknown parent, an intermediate as a parent (pathlen 0): refused.
  assert.equal((await f.api('POST', '/api/orgs/acme/ca_certificates/managed', { parent_serial: '12345' })).status, 422);
  const grand = await f.api('POST', '/api/orgs/acme/ca_certificates/managed', { parent_serial: inter.body.data.serial });
  assert.equal(grand.status, 422, grand.text);

  // A device certificate from the intermediate (JITP: the device does not exist yet).
  const issued = await f.api('POST', `${DEVICES}/int-1/certificates/create`, { ca_serial: inter.body.data.serial });
  assert.equal(issued.status, 201, issued.text);
  assert.deepEqual(issued.body.data.ca_chain, [inter.body.data.certificate, rootCa.body.data.certificate]);
  const files = {};
  for (const [name, pem] of Object.entries({ root: rootCa.body.data.certificate, inter: inter.body.data.certificate,
    leaf: issued.body.data.certificate })) {
    files[name] = path.join(tmp, `${name}.pem`);
    fs.writeFileSync(files[name], pem);
  }
  const verified = openssl(['verify', '-CAfile', files.root, '-untrusted', files.inter, '-purpose', 'sslclient', files.leaf]);
  assert.match(verified.toString(), /: OK/);

  // It connects with its certificate alone, and with the chain it was given.
  const key = issued.body.data.private_key;
  const alone = await eventually(async () => {
    const r = await f.upgrade(null, { cert: issued.body.data.certificate, key });
    return r.status === 101 ? r : null;
  }, 'the intermediate to be trusted', 5000, 100);
  assert.equal(alone.status, 101);
  const chained = await f.upgrade(null, { cert: issued.body.data.certificate + inter.body.data.certificate, key });
  assert.equal(chained.status, 101, JSON.stringify(chained));
  const device = await f.device('int-1');
  assert.ok(device, 'provisioned just in time by the intermediate');
  // Provisioning is audited once, by the device, naming the CA.
  const provisioned = await f.api('GET', '/api/orgs/acme/audit_logs?action=device.provisioned&target=int-1');
  assert.equal(provisioned.body.data.length, 1, provisioned.text);
  assert.equal(provisioned.body.data[0].actor_type, 'device');
  assert.equal(provisioned.body.data[0].actor, 'int-1');
  assert.equal(provisioned.body.data[0].details.ca_serial, inter.body.data.serial);
  assert.equal(provisioned.body.data[0].details.product, 'sensor');
});
