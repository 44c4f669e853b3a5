'use strict';
// CA registration with proof of possession: /api/orgs/:org/ca_certificates against a real hub.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { startHub, runBin } = require('../e2e/lib/hub');
const { TestPki } = require('../e2e/lib/pki');

let hub;
let token;
let pki;
const base = '/api/orgs/acme/ca_certificates';

before(async () => {
  hub = await startHub();
  token = await hub.login();
  pki = new TestPki();
  const product = await hub.request('POST', '/api/orgs/acme/products', { token, body: { name: 'sensor' } });
  assert.equal(product.status, 201);
});

after(async () => {
  if (hub) await hub.stop();
  if (pki) pki.cleanup();
});

async function verificationToken(t = token, org = 'acme') {
  const res = await hub.request('GET', `/api/orgs/${org}/ca_certificates/verification_token`, { token: t });
  assert.equal(res.status, 200, res.text);
  assert.equal(typeof res.body.data.verification_token, 'string');
  return res.body.data.verification_token;
}

function b64(pem) {
  return Buffer.from(pem).toString('base64');
}

async function register(ca, verification, extra = {}, t = token, org = 'acme') {
  return hub.request('POST', `/api/orgs/${org}/ca_certificates`, {
    token: t,
    body: { cert: b64(ca.certPem), verification_cert: b64(verification.certPem), description: 'test CA', ...extra },
  });
}

async function count() {
  const res = await hub.request('GET', base, { token });
  assert.equal(res.status, 200);
  return res.body.data.length;
}

test('a root CA with a SAN verification certificate registers, and reads back', async () => {
  const root = pki.root('Root A');
  const res = await register(root, root.issueVerification(await verificationToken()), {
    jitp: { product_name: 'sensor', tags: ['jit', 'prod'], description: 'auto' },
  });
  assert.equal(res.status, 201, res.text);
  const ca = res.body.data;
  assert.equal(ca.serial, root.serial);
  assert.match(ca.serial, /^\d+$/);
  assert.equal(ca.fingerprint, root.fingerprint);
  assert.match(ca.ski, /^[0-9A-F]{40}$/);
  assert.equal(ca.status, 'active');
  assert.equal(ca.description, 'test CA');
  assert.deepEqual(ca.jitp, { product_name: 'sensor', tags: ['jit', 'prod'], description: 'auto' });
  assert.match(ca.not_before, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

  const one = await hub.request('GET', `${base}/${ca.serial}`, { token });
  assert.equal(one.status, 200);
  assert.equal(one.body.data.ski, ca.ski);
  const list = await hub.request('GET', base, { token });
  assert.ok(list.body.data.some((c) => c.serial === ca.serial));
});

test('the token may be the verification certificate CN, and intermediates register', async () => {
  const root = pki.root('Root B');
  const cnRes = await register(root, root.issueVerification(await verificationToken(), { placement: 'cn' }));
  assert.equal(cnRes.status, 201, cnRes.text);
  assert.equal(cnRes.body.data.jitp, null);

  const intermediate = root.issueCa('Intermediate B');
  const intRes = await register(intermediate, intermediate.issueVerification(await verificationToken()));
  assert.equal(intRes.status, 201, intRes.text);
  assert.equal(intRes.body.data.serial, intermediate.serial);
  assert.match(intRes.body.data.aki, /^[0-9A-F]{40}$/);
});

test('bad registrations are refused with 422 naming the reason and store nothing', async () => {
  const root = pki.root('Root C');
  const good = () => root.issueVerification(currentToken);
  let currentToken = await verificationToken();
  const before = await count();

  const cases = [];
  // Not PEM at all.
  cases.push(['cert not PEM', await hub.request('POST', base, {
    token, body: { cert: b64('hello'), verification_cert: b64(good().certPem) } }), 'cert', /not a valid PEM/]);
  // A device certificate is not a CA.
  const leaf = root.issueLeaf({ cn: 'not-a-ca' });
  cases.push(['not a CA', await register(leaf, good()), 'cert', /not a CA/]);
  // A CA without a Subject Key Identifier.
  const noSki = pki.root('No SKI', { ski: false });
  cases.push(['no SKI', await register(noSki, noSki.issueVerification(currentToken)), 'cert', /Subject Key Identifier/]);
  // Verification certificate signed by another CA.
  const other = pki.root('Other');
  cases.push(['not signed by CA', await register(root, other.issueVerification(currentToken)),
    'verification_cert', /not signed by the CA/]);
  // A token the hub never issued.
  cases.push(['wrong token', await register(root, root.issueVerification('1.99999999999.AAAAAAAAAAAAAAAAAAAAAA')),
    'verification_cert', /expected verification token/]);
  // A genuine token that expired: same format, MAC made with the hub's secret.
  const [orgId] = currentToken.split('.');
  const expiredAt = Math.floor(Date.now() / 1000) - 60;
  const mac = crypto.createHmac('sha256', hub.env.OTAHUB_SECRET_KEY)
    .update(`otahub-ca-verification:${orgId}:${expiredAt}`).digest().subarray(0, 16).toString('base64url');
  cases.push(['expired token', await register(root, root.issueVerification(`${orgId}.${expiredAt}.${mac}`)),
    'verification_cert', /expired/]);
  // No token at all (no SAN, no CN).
  cases.push(['missing verification', await hub.request('POST', base, { token, body: { cert: b64(root.certPem) } }),
    'verification_cert', /blank/]);
  // JITP naming a product that does not exist.
  cases.push(['unknown JITP product', await register(root, good(), { jitp: { product_name: 'nope', tags: [] } }),
    'jitp', /does not exist/]);

  for (const [name, res, field, pattern] of cases) {
    assert.equal(res.status, 422, `${name}: ${res.status} ${res.text}`);
    assert.ok(res.body.errors[field], `${name}: errors.${field} missing in ${res.text}`);
    assert.match(JSON.stringify(res.body.errors[field]), pattern, name);
  }
  assert.equal(await count(), before, 'nothing stored');
});

test('a CA registered by another org is refused', async () => {
  const root = pki.root('Shared Root');
  assert.equal((await register(root, root.issueVerification(await verificationToken()))).status, 201);

  runBin('otahubd', ['create-user', '--email', 'other@example.com', '--password', 'another password',
    '--org', 'globex'], hub.env);
  const otherToken = await hub.login('other@example.com', 'another password');
  const otherTokenValue = await verificationToken(otherToken, 'globex');
  // A token of acme does not work for globex.
  const crossed = await register(root, root.issueVerification(await verificationToken()), {}, otherToken, 'globex');
  assert.equal(crossed.status, 422);
  assert.match(JSON.stringify(crossed.body.errors.verification_cert), /expected verification token/);

  const res = await register(root, root.issueVerification(otherTokenValue), {}, otherToken, 'globex');
  assert.equal(res.status, 422, res.text);
  assert.match(JSON.stringify(res.body.errors.cert), /another organization/);
  const again = await register(root, root.issueVerification(await verificationToken()));
  assert.equal(again.status, 422);
  assert.match(JSON.stringify(again.body.errors.cert), /already been registered/);
  // globex sees none of acme's CAs.
  const list = await hub.request('GET', '/api/orgs/globex/ca_certificates', { token: otherToken });
  assert.deepEqual(list.body.data, []);
  assert.equal((await hub.request('GET', `${base}/${root.serial}`, { token: otherToken })).status, 404);
});

test('PUT toggles active and edits description and JITP; DELETE removes', async () => {
  const root = pki.root('Root D');
  const created = await register(root, root.issueVerification(await verificationToken()));
  assert.equal(created.status, 201);
  const url = `${base}/${root.serial}`;

  let res = await hub.request('PUT', url, { token, body: { active: false, description: 'retired' } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.data.status, 'inactive');
  assert.equal(res.body.data.description, 'retired');

  res = await hub.request('PUT', url, { token, body: { status: 'active', jitp: { product_name: 'sensor', tags: ['a'], description: 'd' } } });
  assert.equal(res.status, 200);
  assert.equal(res.body.data.active, true);
  assert.equal(res.body.data.description, 'retired');
  assert.deepEqual(res.body.data.jitp, { product_name: 'sensor', tags: ['a'], description: 'd' });

  res = await hub.request('PUT', url, { token, body: { jitp: null } });
  assert.equal(res.body.data.jitp, null);
  res = await hub.request('PUT', url, { token, body: { active: 'yes' } });
  assert.equal(res.status, 422);

  assert.equal((await hub.request('DELETE', url, { token })).status, 204);
  assert.equal((await hub.request('GET', url, { token })).status, 404);
  assert.equal((await hub.request('DELETE', url, { token })).status, 404);
});

test('CA routes need a token', async () => {
  assert.equal((await hub.request('GET', base)).status, 401);
  assert.equal((await hub.request('GET', `${base}/verification_token`)).status, 401);
});
