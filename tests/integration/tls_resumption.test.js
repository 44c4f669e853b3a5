'use strict';
// TLS session resumption on the device endpoint (issue 4, "Running several nodes"): a device
// resumes its session with a ticket on the node that issued it and, with OTAHUB_TLS_TICKET_KEY
// shared, on any other node; a node with another key falls back to a full handshake; and a
// certificate revoked after the ticket was issued is refused on resumption.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');
const { startHub, makeServerCerts, dropDatabase } = require('../e2e/lib/hub');
const { TestPki } = require('../e2e/lib/pki');
const { DeviceFixture } = require('../e2e/lib/device_fixture');
const { tlsAlertOf } = require('../e2e/lib/device_client');
const { sample } = require('../e2e/lib/metrics');

const TICKET_KEY = crypto.randomBytes(32).toString('hex');

let certDir;
let fixtures = [];
let a; // node-a, shared ticket key
let b; // node-b, same key
let c; // node-c, its own random key
let pki;
let root;

/**
 * One TLS connection to `port` with `leaf` (resuming `session` when given) and a websocket upgrade
 * request. Resolves {status, reused, ticket, alert, error}: `ticket` is the session the server
 * issued on this connection (null when none arrived).
 */
function upgrade(fixture, leaf, session) {
  return new Promise((resolve) => {
    const result = { status: null, reused: null, ticket: null, alert: null, error: null };
    let head = '';
    let done = false;
    const socket = tls.connect({
      host: 'localhost',
      servername: 'localhost',
      port: fixture.hub.devicePort,
      cert: leaf.chainPem,
      key: leaf.keyPem,
      ca: fixture.serverCa,
      minVersion: 'TLSv1.3',
      session,
    });
    const timer = setTimeout(() => finish('timeout'), 5000);
    function finish(error) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (error && !result.error) result.error = error;
      socket.destroy();
      resolve(result);
    }
    socket.on('session', (ticket) => {
      result.ticket = ticket;
      if (result.status !== null) finish();
    });
    socket.on('secureConnect', () => {
      result.reused = socket.isSessionReused();
      const key = crypto.randomBytes(16).toString('base64');
      socket.write('GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nhost: localhost\r\n' +
        'upgrade: websocket\r\nconnection: Upgrade\r\n' +
        `sec-websocket-key: ${key}\r\nsec-websocket-version: 13\r\n\r\n`);
    });
    socket.on('data', (chunk) => {
      head += chunk.toString('latin1');
      const match = /^HTTP\/1\.1 (\d{3})/.exec(head);
      if (match && result.status === null && head.includes('\r\n\r\n')) {
        result.status = Number(match[1]);
        // The server sends its ticket right after the handshake, before this response.
        if (result.ticket || result.status !== 101) finish();
      }
    });
    socket.on('error', (err) => {
      result.alert = tlsAlertOf(err);
      finish(err.message.trim());
    });
    socket.on('close', () => finish(result.status === null ? 'closed' : null));
  });
}

before(async () => {
  certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'otahub-resume-'));
  const certs = makeServerCerts(certDir);
  const hubA = await startHub({
    certs, env: { OTAHUB_NODE_ID: 'node-a', OTAHUB_TLS_TICKET_KEY: TICKET_KEY },
  });
  const token = await hubA.login();
  const shared = { OTAHUB_SECRET_KEY: hubA.env.OTAHUB_SECRET_KEY };
  const hubB = await startHub({
    certs, database: hubA.db, admin: null,
    env: { ...shared, OTAHUB_NODE_ID: 'node-b', OTAHUB_TLS_TICKET_KEY: TICKET_KEY },
  });
  const hubC = await startHub({
    certs, database: hubA.db, admin: null,
    env: { ...shared, OTAHUB_NODE_ID: 'node-c', OTAHUB_TLS_VERIFY_CACHE: '0' },
  });
  pki = new TestPki();
  a = new DeviceFixture(hubA, token, pki);
  b = new DeviceFixture(hubB, token, pki);
  c = new DeviceFixture(hubC, token, pki);
  fixtures = [a, b, c];
  assert.equal((await a.api('POST', '/api/orgs/acme/products', { name: 'sensor' })).status, 201);
  root = pki.root('Resumption Root');
  await a.registerCa(root, { jitp: { product_name: 'sensor', tags: [], description: '' } });
  await b.waitForTrust(root, true);
  await c.waitForTrust(root, true);
});

after(async () => {
  for (const f of [...fixtures].reverse()) await f.hub.stop({ keepDatabase: true, signal: 'SIGKILL' });
  if (a) dropDatabase(a.hub.db.name);
  if (pki) pki.cleanup();
  if (certDir) fs.rmSync(certDir, { recursive: true, force: true });
});

test('a device resumes its TLS session on the node that issued the ticket', async () => {
  const leaf = root.issueLeaf({ cn: 'resume-one' });
  const first = await upgrade(a, leaf);
  assert.equal(first.status, 101, JSON.stringify(first));
  assert.equal(first.reused, false);
  assert.ok(first.ticket, 'the hub issued a session ticket');

  const second = await upgrade(a, leaf, first.ticket);
  assert.equal(second.reused, true, 'the session was resumed');
  assert.equal(second.status, 101, JSON.stringify(second));
  const device = await a.device('resume-one');
  assert.equal(device.identifier, 'resume-one');
});

test('with OTAHUB_TLS_TICKET_KEY shared, a ticket from node A resumes on node B', async () => {
  const leaf = root.issueLeaf({ cn: 'resume-cross' });
  const first = await upgrade(a, leaf);
  assert.equal(first.status, 101, JSON.stringify(first));
  const onB = await upgrade(b, leaf, first.ticket);
  assert.equal(onB.reused, true, 'node B resumed node A\'s session');
  assert.equal(onB.status, 101, JSON.stringify(onB));
  // A ticket node B issued works back on node A.
  assert.ok(onB.ticket, 'node B issued a ticket');
  const backOnA = await upgrade(a, leaf, onB.ticket);
  assert.equal(backOnA.reused, true);
  assert.equal(backOnA.status, 101);
});

test('a node with another ticket key falls back to a full handshake', async () => {
  const leaf = root.issueLeaf({ cn: 'resume-other-key' });
  const first = await upgrade(a, leaf);
  assert.equal(first.status, 101, JSON.stringify(first));
  const onC = await upgrade(c, leaf, first.ticket);
  assert.equal(onC.reused, false, 'node C cannot decrypt node A\'s ticket');
  assert.equal(onC.status, 101, JSON.stringify(onC));
});

async function verifyCache(fixture) {
  const res = await fixture.hub.request('GET', '/metrics');
  assert.equal(res.status, 200);
  return {
    entries: sample(res.text, 'otahub_tls_verify_cache_entries'),
    hits: sample(res.text, 'otahub_tls_verify_cache_hits'),
  };
}

test('a node accepts a certificate it accepted before without checking its chain again, resumed or not; OTAHUB_TLS_VERIFY_CACHE=0 checks every time', async () => {
  const leaf = root.issueLeaf({ cn: 'resume-remembered' });
  const before = await verifyCache(a);
  const first = await upgrade(a, leaf);
  assert.equal(first.status, 101, JSON.stringify(first));
  const resumed = await upgrade(a, leaf, first.ticket);
  assert.equal(resumed.reused, true);
  assert.equal(resumed.status, 101, JSON.stringify(resumed));
  const full = await upgrade(a, leaf);
  assert.equal(full.reused, false);
  assert.equal(full.status, 101, JSON.stringify(full));
  const afterwards = await verifyCache(a);
  assert.ok(afterwards.entries >= 1, JSON.stringify(afterwards));
  // Other tests may run handshakes on node A meanwhile: at least these two hits.
  assert.ok(afterwards.hits >= before.hits + 2, `${JSON.stringify(before)} -> ${JSON.stringify(afterwards)}`);

  // Node C keeps nothing: the same certificate, twice, is checked twice.
  const onC = await upgrade(c, leaf);
  assert.equal(onC.status, 101, JSON.stringify(onC));
  assert.equal((await upgrade(c, leaf)).status, 101);
  assert.deepEqual(await verifyCache(c), { entries: 0, hits: 0 });
});

test('a certificate revoked after its ticket was issued is refused on resumption', async () => {
  const leaf = root.issueLeaf({ cn: 'resume-revoked' });
  const onA = await upgrade(a, leaf);
  assert.equal(onA.status, 101, JSON.stringify(onA));
  const onB = await upgrade(b, leaf);
  assert.equal(onB.status, 101, JSON.stringify(onB));
  // Both tickets resume while the certificate is good.
  const check = await upgrade(a, leaf, onA.ticket);
  assert.equal(check.reused, true);
  assert.equal(check.status, 101);

  const res = await a.api('DELETE',
    `/api/orgs/acme/products/sensor/devices/resume-revoked/certificates/${leaf.serial}`);
  assert.equal(res.status, 204);
  // Every node has the revocation once a full handshake is refused there.
  await a.waitForAlert(leaf, 'certificate revoked');
  await b.waitForAlert(leaf, 'certificate revoked');

  for (const [fixture, ticket] of [[a, onA.ticket], [b, onB.ticket], [b, onA.ticket]]) {
    const resumed = await upgrade(fixture, leaf, ticket);
    assert.notEqual(resumed.status, 101, `refused on ${fixture.hub.env.OTAHUB_NODE_ID}`);
    assert.notEqual(resumed.reused, true, 'no resumption with a revoked certificate');
    assert.equal(resumed.alert, 'certificate revoked', JSON.stringify(resumed));
  }
});

test('a device disabled after its ticket was issued is refused on resumption', async () => {
  const leaf = root.issueLeaf({ cn: 'resume-disabled' });
  const first = await upgrade(a, leaf);
  assert.equal(first.status, 101, JSON.stringify(first));
  const res = await a.api('PUT', '/api/orgs/acme/products/sensor/devices/resume-disabled',
    { device: { disabled: true } });
  assert.equal(res.status, 200, res.text);
  const resumed = await upgrade(a, leaf, first.ticket);
  assert.notEqual(resumed.status, 101, JSON.stringify(resumed));
  assert.ok(resumed.status === 403 || resumed.alert, JSON.stringify(resumed));
});
