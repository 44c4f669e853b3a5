'use strict';
// Certificate lifecycle against a real otahubd: hub-managed CAs, CSR signing (CN forced, bad
// signatures refused), device certificates over mTLS with JITP, CRL import for custom CAs and
// refusal of listed serials, the missing-CRL policy, rotation over the device socket with a raw
// `ws` client (renew → csr → issued → reconnect → old certificate revoked after the grace), the
// public CRL of managed CAs, the CA key under a different OTAHUB_SECRET_KEY, and audit rows.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
// `ws` lives in tests/e2e/node_modules (ctest also sets NODE_PATH).
const WebSocket = require(require.resolve('ws', { paths: [path.join(__dirname, '../e2e')] }));
const { startDeviceFixture, eventually } = require('../e2e/lib/device_fixture');
const { startHub, dropDatabase, binDir } = require('../e2e/lib/hub');

const GRACE_S = 2;
const DEVICES = '/api/orgs/acme/products/sensor/devices';
let f;
let tmp;
let managed;   // the managed CA (JITP into sensor)
let pki;

function openssl(args, input) {
  return execFileSync('openssl', args, { input, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** A fresh P-256 key and a CSR with subject CN=`cn`: {keyPem, csrPem}. */
function newCsr(cn) {
  const keyFile = path.join(tmp, `${crypto.randomUUID()}.key`);
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyFile]);
  const csrPem = openssl(['req', '-new', '-key', keyFile, '-subj', `/CN=${cn}/O=elsewhere`]).toString();
  return { keyPem: fs.readFileSync(keyFile, 'utf8'), csrPem };
}

/** The CSR with one byte of its signature flipped (still parses, no longer verifies). */
function corruptCsr(csrPem) {
  const b64 = csrPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  const der = Buffer.from(b64, 'base64');
  der[der.length - 3] ^= 0x01;
  const lines = der.toString('base64').match(/.{1,64}/g).join('\n');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${lines}\n-----END CERTIFICATE REQUEST-----\n`;
}

function subjectCn(pem) {
  return /CN=([^\n,]+)/.exec(new crypto.X509Certificate(pem).subject)[1];
}

function serialOfPem(pem) {
  return BigInt(`0x${new crypto.X509Certificate(pem).serialNumber}`).toString();
}

async function auditActions(query = '') {
  const res = await f.api('GET', `/api/orgs/acme/audit_logs${query}`);
  assert.equal(res.status, 200, res.text);
  return res.body.data;
}

function upgradeWith(certPem, keyPem) {
  return f.upgrade(null, { cert: certPem, key: keyPem });
}

/** A minimal Phoenix V2 client on a raw `ws` socket: join `device`, collect pushes. */
async function rawDevice(certPem, keyPem) {
  const ws = new WebSocket(`wss://localhost:${f.hub.devicePort}/socket/websocket?vsn=2.0.0`, {
    cert: certPem, key: keyPem, ca: f.serverCa,
  });
  const frames = [];
  const waiters = [];
  ws.on('message', (data) => {
    const frame = JSON.parse(data.toString());
    frames.push(frame);
    for (const w of [...waiters]) {
      if (w.match(frame)) {
        waiters.splice(waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(frame);
      }
    }
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode} ${res.headers['nh-connection-error-reason']}`)));
  });
  let ref = 0;
  const client = {
    ws,
    frames,
    next(match, what, timeoutMs = 8000) {
      const found = frames.find(match);
      if (found) {
        frames.splice(frames.indexOf(found), 1);
        return Promise.resolve(found);
      }
      return new Promise((resolve, reject) => {
        const w = { match, resolve };
        w.timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`timed out waiting for ${what}`));
        }, timeoutMs);
        waiters.push(w);
      }).then((frame) => {
        frames.splice(frames.indexOf(frame), 1);
        return frame;
      });
    },
    push(event) {
      return client.next((fr) => fr[0] === null && fr[2] === 'device' && fr[3] === event, `push ${event}`);
    },
    send(event, payload) {
      ref += 1;
      ws.send(JSON.stringify(['1', String(ref), 'device', event, payload]));
      return String(ref);
    },
    close() {
      return new Promise((resolve) => {
        if (ws.readyState === WebSocket.CLOSED) return resolve();
        ws.once('close', resolve);
        ws.close();
      });
    },
  };
  const joinRef = client.send('phx_join', { nerves_fw_uuid: crypto.randomUUID(), nerves_fw_version: '1.0.0' });
  const reply = await client.next((fr) => fr[3] === 'phx_reply' && fr[1] === joinRef, 'join reply');
  assert.equal(reply[4].status, 'ok', JSON.stringify(reply));
  return client;
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'otahub-certs-'));
  f = await startDeviceFixture({ env: { OTAHUB_CERT_ROTATION_GRACE: String(GRACE_S) } });
  pki = f.pki;
  const res = await f.api('POST', '/api/orgs/acme/ca_certificates/managed', {
    description: 'fleet CA',
    jitp: { product_name: 'sensor', tags: ['managed'], description: 'jit' },
  });
  assert.equal(res.status, 201, res.text);
  managed = res.body.data;
});

after(async () => {
  if (f) await f.hub.stop();
  if (pki) pki.cleanup();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('managed CA: P-256 self-signed CA registered like a custom CA, key never returned', async () => {
  assert.equal(managed.managed, true);
  assert.equal(managed.active, true);
  const ca = new crypto.X509Certificate(managed.certificate);
  assert.equal(ca.ca, true);
  assert.equal(ca.publicKey.asymmetricKeyDetails.namedCurve, 'prime256v1');
  assert.equal(ca.fingerprint.replace(/:/g, ''), managed.fingerprint);
  assert.match(managed.crl_url, new RegExp(`/crl/${managed.fingerprint}\\.crl$`));
  assert.equal(JSON.stringify(managed).includes('PRIVATE KEY'), false);
  const listed = await f.api('GET', '/api/orgs/acme/ca_certificates');
  assert.ok(listed.body.data.some((c) => c.serial === managed.serial && c.jitp && c.jitp.product_name === 'sensor'));
  const rows = await auditActions('?action=ca_certificate.managed_created');
  assert.equal(rows.length, 1);
  assert.equal(rows[0].resource, managed.serial);
  assert.equal(rows[0].actor, 'admin@example.com');
  assert.equal(rows[0].actor_type, 'user');
  assert.ok(rows[0].request_id);
});

test('device cert create → device connects over mTLS and is provisioned just in time', async () => {
  const res = await f.api('POST', `${DEVICES}/jit-1/certificates/create`, {});
  assert.equal(res.status, 201, res.text);
  const issued = res.body.data;
  assert.equal(issued.device_registered, false);
  assert.match(issued.private_key, /BEGIN PRIVATE KEY/);
  assert.equal(subjectCn(issued.certificate), 'jit-1');
  assert.deepEqual(issued.ca_chain, [managed.certificate]);
  const cert = new crypto.X509Certificate(issued.certificate);
  assert.equal(cert.verify(new crypto.X509Certificate(managed.certificate).publicKey), true);
  assert.equal(cert.ca, false);
  // Trust reloads asynchronously after the CA was created.
  const up = await eventually(async () => {
    const r = await upgradeWith(issued.certificate, issued.private_key);
    return r.status === 101 ? r : null;
  }, 'the device to connect with its hub-issued certificate');
  assert.equal(up.accepted, true);
  const device = await f.device('jit-1');
  assert.ok(device, 'JITP created the device');
  assert.deepEqual(device.tags, ['managed']);
  const certs = await f.api('GET', `${DEVICES}/jit-1/certificates`);
  assert.deepEqual(certs.body.data.map((c) => c.serial), [issued.serial]);
  const rows = await auditActions('?action=device.certificate.created&resource=jit-1');
  assert.equal(rows.length, 1);
  assert.equal(rows[0].details.serial, issued.serial);
});

test('CSR signing: the CN is forced to the identifier; a bad signature is a 422; nothing stored on refusal', async () => {
  const created = await f.api('POST', DEVICES, { identifier: 'csr-1', tags: [] });
  assert.equal(created.status, 201, created.text);
  const { keyPem, csrPem } = newCsr('somebody-else');
  const res = await f.api('POST', `${DEVICES}/csr-1/certificates/sign`, { csr: csrPem, validity_days: 30 });
  assert.equal(res.status, 201, res.text);
  const issued = res.body.data;
  assert.equal(subjectCn(issued.certificate), 'csr-1');
  assert.equal(new crypto.X509Certificate(issued.certificate).subject.includes('elsewhere'), false);
  assert.equal(issued.device_registered, true);
  const days = (new Date(issued.not_after) - Date.now()) / 86400000;
  assert.ok(days > 29 && days <= 30.1, `validity ${days} days`);
  // The key in the certificate is the CSR's.
  const certKey = new crypto.X509Certificate(issued.certificate).publicKey.export({ type: 'spki', format: 'der' });
  const csrKey = crypto.createPublicKey(keyPem).export({ type: 'spki', format: 'der' });
  assert.deepEqual(certKey, csrKey);
  const stored = await f.api('GET', `${DEVICES}/csr-1/certificates`);
  assert.deepEqual(stored.body.data.map((c) => c.serial), [issued.serial]);
  const up = await upgradeWith(issued.certificate, keyPem);
  assert.equal(up.status, 101, JSON.stringify(up));

  const bad = await f.api('POST', `${DEVICES}/csr-1/certificates/sign`, { csr: corruptCsr(newCsr('csr-1').csrPem) });
  assert.equal(bad.status, 422, bad.text);
  assert.ok(bad.body.errors.csr, bad.text);
  const garbage = await f.api('POST', `${DEVICES}/csr-1/certificates/sign`, { csr: 'not a csr' });
  assert.equal(garbage.status, 422, garbage.text);
  const after = await f.api('GET', `${DEVICES}/csr-1/certificates`);
  assert.equal(after.body.data.length, 1, 'refused CSRs stored nothing');
  // An unknown device of a product the CA does not provision: 404.
  await f.api('POST', '/api/orgs/acme/products', { name: 'other' });
  const unknown = await f.api('POST', '/api/orgs/acme/products/other/devices/ghost/certificates/sign', { csr: csrPem });
  assert.equal(unknown.status, 404, unknown.text);
  const rows = await auditActions('?action=device.certificate.signed');
  assert.equal(rows.length, 1, 'one audit row for the one signed certificate');
  assert.equal(rows[0].resource, 'csr-1');
});

test('CRL import for a custom CA: listed serial refused at connection, live session closed, policy for a missing CRL', async () => {
  const root = f.pki.root('CRL Root');
  await f.registerCa(root, { jitp: { product_name: 'sensor', tags: [], description: '' } });
  const revoked = root.issueLeaf({ cn: 'crl-revoked' });
  const kept = root.issueLeaf({ cn: 'crl-kept' });
  assert.equal((await f.upgrade(revoked)).status, 101);
  const live = await f.connect(revoked);

  const cnf = path.join(root.dbDir, 'ca.cnf');
  openssl(['ca', '-batch', '-config', cnf, '-cert', root.certFile, '-keyfile', root.keyFile, '-revoke', revoked.certFile]);
  const crlPem = openssl(['ca', '-batch', '-config', cnf, '-cert', root.certFile, '-keyfile', root.keyFile,
    '-gencrl', '-crldays', '1']).toString();
  const crlUrl = `/api/orgs/acme/ca_certificates/${root.serial}/crl`;

  // A CRL signed by another CA is refused.
  const other = f.pki.root('Other Root');
  const otherCrl = openssl(['ca', '-batch', '-config', path.join(other.dbDir, 'ca.cnf'), '-cert', other.certFile,
    '-keyfile', other.keyFile, '-gencrl', '-crldays', '1']).toString();
  const wrong = await f.hub.request('PUT', crlUrl, { token: f.token, raw: otherCrl, headers: { 'content-type': 'application/x-pem-file' } });
  assert.equal(wrong.status, 422, wrong.text);

  const der = openssl(['crl', '-inform', 'PEM', '-outform', 'DER'], crlPem);
  const put = await f.hub.request('PUT', crlUrl, { token: f.token, raw: der, headers: { 'content-type': 'application/pkix-crl' } });
  assert.equal(put.status, 200, put.text);
  assert.equal(put.body.data.present, true);
  assert.equal(put.body.data.revoked_count, 1);
  const closed = await live.waitForClose(3000);
  assert.equal(closed.code, 1008);

  // The upload publishes trust_changed: once the node reloaded its trust the listed serial is
  // refused in the TLS handshake itself (certificate_revoked alert); until then, the upgrade's
  // 403 is the second line.
  const refused = await f.upgrade(revoked);
  if (refused.status === 403) {
    assert.match(refused.headers['nh-connection-error-reason'], /revoked by the CA's CRL/);
  } else {
    assert.equal(refused.alert, 'certificate revoked', JSON.stringify(refused));
  }
  await f.waitForAlert(revoked, 'certificate revoked');
  assert.equal((await f.upgrade(kept)).status, 101, 'serials not listed still connect');
  // PEM re-upload (refresh) is accepted too.
  const again = await f.hub.request('PUT', crlUrl, { token: f.token, raw: crlPem, headers: { 'content-type': 'application/x-pem-file' } });
  assert.equal(again.status, 200, again.text);

  // Missing CRL policy: a CA without CRL is accepted by default, refused under 'refuse'.
  const bare = f.pki.root('No CRL Root');
  await f.registerCa(bare, { jitp: { product_name: 'sensor', tags: [], description: '' } });
  const leaf = bare.issueLeaf({ cn: 'no-crl-device' });
  assert.equal((await f.upgrade(leaf)).status, 101);
  const policyUrl = `/api/orgs/acme/ca_certificates/${bare.serial}/crl_policy`;
  const strict = await f.api('PUT', policyUrl, { missing_crl: 'refuse' });
  assert.equal(strict.status, 200, strict.text);
  assert.equal(strict.body.data.missing_crl, 'refuse');
  const noCrl = await f.upgrade(leaf);
  assert.equal(noCrl.status, 403);
  assert.match(noCrl.headers['nh-connection-error-reason'], /no CRL imported/);
  // A device never seen before is refused the same way, and nothing is provisioned for it.
  const unseen = bare.issueLeaf({ cn: 'no-crl-unseen' });
  const unseenRefused = await f.upgrade(unseen);
  assert.equal(unseenRefused.status, 403);
  assert.match(unseenRefused.headers['nh-connection-error-reason'], /no CRL imported/);
  assert.equal((await f.api('GET', `${DEVICES}/no-crl-unseen`)).status, 404);
  assert.equal((await f.api('GET', `${DEVICES}/no-crl-device`)).status, 200, 'the GET itself works');
  assert.equal((await f.api('PUT', policyUrl, { missing_crl: 'sometimes' })).status, 422);
  await f.api('PUT', policyUrl, { missing_crl: 'accept' });
  assert.equal((await f.upgrade(leaf)).status, 101);

  // Managed CAs publish their own CRL: importing one is refused.
  const managedCrl = await f.hub.request('PUT', `/api/orgs/acme/ca_certificates/${managed.serial}/crl`,
    { token: f.token, raw: crlPem, headers: { 'content-type': 'application/x-pem-file' } });
  assert.equal(managedCrl.status, 422, managedCrl.text);

  const imports = await auditActions(`?action=ca_certificate.crl_imported&resource=${root.serial}`);
  assert.equal(imports.length, 2);
  assert.equal(imports[1].details.revoked_count, 1);
  assert.equal((await auditActions('?action=ca_certificate.crl_policy_changed')).length, 2);
});

test('rotation over the device socket: renew → csr → issued → reconnect with the new certificate → old one revoked after the grace', async () => {
  const created = await f.api('POST', `${DEVICES}/rot-1/certificates/create`, {});
  assert.equal(created.status, 201, created.text);
  const old = created.body.data;
  const first = await rawDevice(old.certificate, old.private_key);

  const rotate = await f.api('POST', `${DEVICES}/rot-1/certificates/rotate`, { reason: 'key compromise drill' });
  assert.equal(rotate.status, 202, rotate.text);
  assert.equal(rotate.body.data.serial, old.serial);
  const renew = await first.push('certificate_renew');
  assert.equal(renew[4].reason, 'key compromise drill');
  assert.equal(renew[4].not_after, old.not_after);

  // A CSR with another CN and a fresh key: the hub signs it for rot-1.
  const { keyPem, csrPem } = newCsr('not-rot-1');
  first.send('certificate_csr', { csr: csrPem });
  const issuedFrame = await first.push('certificate_issued');
  const issued = issuedFrame[4];
  assert.equal(subjectCn(issued.certificate), 'rot-1');
  assert.deepEqual(issued.ca_chain, [managed.certificate]);
  const newSerial = serialOfPem(issued.certificate);
  // A second CSR on the same certificate is refused (a successor exists).
  first.send('certificate_csr', { csr: newCsr('rot-1').csrPem });
  const refusal = await first.push('certificate_error');
  assert.match(refusal[4].reason, /successor/);
  // A bad CSR is refused without a certificate.
  const other = await f.api('POST', `${DEVICES}/rot-2/certificates/create`, {});
  const second = await rawDevice(other.body.data.certificate, other.body.data.private_key);
  second.send('certificate_csr', { csr: corruptCsr(newCsr('rot-2').csrPem) });
  const badSig = await second.push('certificate_error');
  assert.match(badSig[4].reason, /signature/i);
  await second.close();

  // The old certificate still works until the device uses the new one.
  await first.close();
  assert.equal((await upgradeWith(old.certificate, old.private_key)).status, 101);
  const renewed = await rawDevice(issued.certificate, keyPem);
  await eventually(async () => (await auditActions('?action=device.certificate.rotated&resource=rot-1')).length === 1,
    'the rotation to be recorded');
  // After the grace period the old certificate is revoked and refused.
  // Refused at the TLS handshake (alert) once trust reloaded, by the upgrade (403) before.
  const refused = await eventually(async () => {
    const r = await upgradeWith(old.certificate, old.private_key);
    return r.alert === 'certificate revoked' || r.status === 403 ? r : null;
  }, 'the old certificate to be revoked', (GRACE_S + 10) * 1000, 250);
  if (refused.status === 403) assert.match(refused.headers['nh-connection-error-reason'], /revoked/);
  const certs = await f.api('GET', `${DEVICES}/rot-1/certificates`);
  assert.deepEqual(certs.body.data.map((c) => c.serial), [newSerial]);
  await renewed.close();
  assert.equal((await upgradeWith(issued.certificate, keyPem)).status, 101, 'the new certificate keeps working');

  // The managed CA's public CRL lists the retired serial (no token needed).
  const crl = await f.hub.request('GET', `/crl/${managed.fingerprint.toLowerCase()}.crl`);
  assert.equal(crl.status, 200);
  assert.equal(crl.headers['content-type'], 'application/pkix-crl');
  const crlRes = await new Promise((resolve, reject) => {
    require('node:http').get(`${f.hub.apiUrl}/crl/${managed.fingerprint}.crl`, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks)));
    }).on('error', reject);
  });
  const caFile = path.join(tmp, 'managed-ca.pem');
  fs.writeFileSync(caFile, managed.certificate);
  const text = openssl(['crl', '-inform', 'DER', '-CAfile', caFile, '-text', '-noout'], crlRes).toString();
  const oldHex = BigInt(old.serial).toString(16).toUpperCase();
  assert.ok(text.replace(/\s/g, '').toUpperCase().includes(oldHex), `CRL lists ${oldHex}:\n${text}`);
  assert.equal((await f.hub.request('GET', '/crl/0000000000000000000000000000000000000000.crl')).status, 404);

  const actions = (await auditActions('?resource=rot-1')).map((r) => r.action);
  for (const action of ['device.certificate.created', 'device.certificate.rotation_requested',
    'device.certificate.issued', 'device.certificate.rotated', 'device.certificate.revoked']) {
    assert.ok(actions.includes(action), `audit has ${action}: ${actions.join(', ')}`);
  }
  const revokedRow = (await auditActions('?action=device.certificate.revoked&resource=rot-1'))[0];
  assert.equal(revokedRow.actor_type, 'system');
  assert.equal(revokedRow.details.serial, old.serial);
});

test('a certificate expiring within the renewal window gets certificate_renew when the device joins', async () => {
  const created = await f.api('POST', `${DEVICES}/soon-1/certificates/create`, { validity_days: 10 });
  assert.equal(created.status, 201, created.text);
  const { certificate, private_key: key } = created.body.data;
  const device = await rawDevice(certificate, key);
  const renew = await device.push('certificate_renew');
  assert.equal(renew[4].reason, 'expiring');
  assert.equal(renew[4].not_after, created.body.data.not_after);
  await device.close();
});

test('audit log: filters and pagination with before/limit; bad parameters are a 400', async () => {
  const all = await auditActions('?limit=500');
  assert.ok(all.length >= 8, `${all.length} rows`);
  for (let i = 1; i < all.length; i += 1) assert.ok(all[i - 1].id > all[i].id, 'newest first');
  const page1 = await auditActions('?limit=2');
  assert.equal(page1.length, 2);
  const page2 = await auditActions(`?limit=2&before=${page1[1].id}`);
  assert.deepEqual(page2.map((r) => r.id), all.slice(2, 4).map((r) => r.id));
  const byType = await auditActions('?resource_type=ca_certificate');
  assert.ok(byType.length > 0 && byType.every((r) => r.resource_type === 'ca_certificate'));
  const byActor = await auditActions('?actor=nobody@example.com');
  assert.equal(byActor.length, 0);
  for (const q of ['?limit=0', '?limit=501', '?before=abc']) {
    assert.equal((await f.api('GET', `/api/orgs/acme/audit_logs${q}`)).status, 400, q);
  }
});

test('every new route answers 401 without a token (the public CRL needs none)', async () => {
  const routes = [
    ['POST', '/api/orgs/acme/ca_certificates/managed'],
    ['GET', `/api/orgs/acme/ca_certificates/${managed.serial}/crl`],
    ['PUT', `/api/orgs/acme/ca_certificates/${managed.serial}/crl`],
    ['PUT', `/api/orgs/acme/ca_certificates/${managed.serial}/crl_policy`],
    ['POST', `${DEVICES}/jit-1/certificates/sign`],
    ['POST', `${DEVICES}/jit-1/certificates/create`],
    ['POST', `${DEVICES}/jit-1/certificates/rotate`],
    ['GET', '/api/orgs/acme/audit_logs'],
  ];
  for (const [method, url] of routes) {
    const res = await f.hub.request(method, url, { body: method === 'GET' ? undefined : { csr: 'x' } });
    assert.equal(res.status, 401, `${method} ${url}: ${res.text}`);
  }
});

test('CLI: otahub ca create (--parent), device cert create --out DIR (key.pem 0600), device cert sign --csr FILE, reports certificates', async () => {
  const home = fs.mkdtempSync(path.join(tmp, 'home-'));
  const run = (args) => execFileSync(path.join(binDir(), 'otahub'), args, {
    env: {
      PATH: process.env.PATH, HOME: home, XDG_CONFIG_HOME: path.join(home, 'xdg'),
      ASAN_OPTIONS: process.env.ASAN_OPTIONS || '', UBSAN_OPTIONS: process.env.UBSAN_OPTIONS || '',
      OTAHUB_URL: f.hub.apiUrl, OTAHUB_TOKEN: f.token, OTAHUB_ORG: 'acme', OTAHUB_PRODUCT: 'sensor',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  }).toString();
  const caOut = run(['--json', 'ca', 'create', '--description', 'from the CLI', '--jitp-product', 'sensor', '--jitp-tag', 'cli']);
  const ca = JSON.parse(caOut);
  assert.equal(ca.managed, true);
  assert.equal(ca.description, 'from the CLI');
  assert.deepEqual(ca.jitp.tags, ['cli']);

  const dir = path.join(home, 'cli-1');
  const created = run(['device', 'cert', 'create', 'cli-1', '--out', dir, '--ca-serial', ca.serial]);
  assert.match(created, /cert\.pem, key\.pem and ca\.pem/);
  assert.equal(fs.statSync(path.join(dir, 'key.pem')).mode & 0o777, 0o600);
  const certPem = fs.readFileSync(path.join(dir, 'cert.pem'), 'utf8');
  assert.equal(subjectCn(certPem), 'cli-1');
  assert.equal(fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8'), ca.certificate);
  const key = crypto.createPrivateKey(fs.readFileSync(path.join(dir, 'key.pem')));
  assert.deepEqual(crypto.createPublicKey(key).export({ type: 'spki', format: 'der' }),
    new crypto.X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' }));
  const up = await eventually(async () => {
    const r = await upgradeWith(certPem, fs.readFileSync(path.join(dir, 'key.pem'), 'utf8'));
    return r.status === 101 ? r : null;
  }, 'the CLI-made certificate to connect');
  assert.equal(up.accepted, true);

  const { csrPem } = newCsr('whoever');
  const csrFile = path.join(home, 'dev.csr');
  fs.writeFileSync(csrFile, csrPem);
  const signed = run(['device', 'cert', 'sign', 'cli-1', '--csr', csrFile]);
  assert.match(signed, /^-----BEGIN CERTIFICATE-----/);
  assert.equal(subjectCn(signed), 'cli-1');
  assert.equal(new crypto.X509Certificate(signed).checkIssued(new crypto.X509Certificate(ca.certificate)), true);

  // An intermediate under that CA; a device certificate from it gets the chain up to the root.
  // (It provisions sensor just in time too: later tests sign with the org's newest CA.)
  const inter = JSON.parse(run(['--json', 'ca', 'create', '--parent', ca.serial, '--description', 'line 2',
    '--jitp-product', 'sensor']));
  assert.equal(inter.parent_serial, ca.serial);
  const interDir = path.join(home, 'cli-2');
  run(['device', 'cert', 'create', 'cli-1', '--out', interDir, '--ca-serial', inter.serial, '--validity-days', '5']);
  assert.equal(fs.readFileSync(path.join(interDir, 'ca.pem'), 'utf8'), inter.certificate + ca.certificate);

  // The certificate report, as a table and as JSON: the 5-day certificate is expiring.
  const table = run(['reports', 'certificates', '--days', '30']);
  assert.match(table, /Device certificates expiring within 30 days:/);
  assert.match(table, /cli-1/);
  assert.match(table, /CAs expiring within 30 days:/);
  const report = JSON.parse(run(['--json', 'reports', 'certificates', '--days', '30']));
  assert.equal(report.days, 30);
  const serial = serialOfPem(fs.readFileSync(path.join(interDir, 'cert.pem'), 'utf8'));
  assert.ok(report.expiring_certificates.some((c) => c.identifier === 'cli-1' && c.serial === serial));
  assert.ok(!report.expiring_cas.some((c) => c.serial === inter.serial), 'CAs live 20 years');
});

test('the managed CA key is unusable under another OTAHUB_SECRET_KEY (clear 503, nothing lost) and without one', async () => {
  const secret = f.hub.env.OTAHUB_SECRET_KEY;
  const db = f.hub.db;
  await f.hub.stop({ keepDatabase: true });
  const creds = ['admin@example.com', 'correct horse battery'];
  let hub = await startHub({ database: db, admin: null, env: { OTAHUB_SECRET_KEY: crypto.randomBytes(32).toString('hex') } });
  try {
    const token = await hub.login(...creds);
    const res = await hub.request('POST', `${DEVICES}/jit-9/certificates/create`, { token, body: {} });
    assert.equal(res.status, 503, res.text);
    assert.match(res.body.errors.detail, /OTAHUB_SECRET_KEY/);
    assert.equal((await hub.request('GET', `/crl/${managed.fingerprint}.crl`)).status, 503);
  } finally {
    await hub.stop();
  }
  hub = await startHub({ database: db, admin: null, env: { OTAHUB_SECRET_KEY: '' } });
  try {
    const token = await hub.login(...creds);
    const res = await hub.request('POST', '/api/orgs/acme/ca_certificates/managed', { token, body: { description: 'x' } });
    assert.equal(res.status, 503, res.text);
    assert.match(res.body.errors.detail, /OTAHUB_SECRET_KEY/);
  } finally {
    await hub.stop();
  }
  // Back with the original secret: the key was never lost.
  hub = await startHub({ database: db, admin: null, env: { OTAHUB_SECRET_KEY: secret } });
  try {
    const token = await hub.login(...creds);
    const res = await hub.request('POST', `${DEVICES}/jit-9/certificates/create`, { token, body: {} });
    assert.equal(res.status, 201, res.text);
  } finally {
    await hub.stop();
    dropDatabase(db.name);
    f = null;
  }
});
