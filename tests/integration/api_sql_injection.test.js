'use strict';
// SQL injection strings in every string field of the admin API's create bodies (orgs, org
// users, products, devices, signing keys, deployments, CA certificates, login) and in path
// segments. Each must be stored literally (read back byte for byte) or refused with a 4xx;
// never a 5xx, never a slow answer (pg_sleep), and the database must be intact afterwards.
// Authorization over every documented route (no token, another org, view-only) is covered by
// api.test.js; this file does not repeat it.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { startHub } = require('../e2e/lib/hub');

const FIXTURES = path.join(__dirname, '..', 'fixtures', 'fwup');
const INJECTIONS = [
  "'",
  "' OR '1'='1",
  "' OR 1=1 --",
  "'; DROP TABLE devices; --",
  "x'); DELETE FROM orgs; --",
  '" OR ""="',
  "admin'--",
  "'||(SELECT version())||'",
  "'; SELECT pg_sleep(3); --",
  "$$; DROP TABLE users; $$",
  "\\'; TRUNCATE products; --",
  '%_%',
  "1; UPDATE org_users SET role='admin'",
  "é'ü\u2028; --",
  "O'Brien's fleet",
];
const SLOW_MS = 2500;

let hub;
let token;
let firmwareUuid;
let keyPem;
const outcomes = { stored: 0, refused: 0 };

before(async () => {
  hub = await startHub();
  token = await hub.login();
  for (const name of ['demo', 'victim']) {
    const res = await hub.request('POST', '/api/orgs/acme/products', { token, body: { name } });
    assert.equal(res.status, 201, res.text);
  }
  keyPem = fs.readFileSync(path.join(FIXTURES, 'signing.pub'), 'utf8').trim();
  const key = await hub.request('POST', '/api/orgs/acme/keys', { token, body: { name: 'release', key: keyPem } });
  assert.equal(key.status, 201, key.text);
  const fw = await hub.request('POST', '/api/orgs/acme/products/demo/firmwares', {
    token, raw: fs.readFileSync(path.join(FIXTURES, 'demo-1.0.0.fw')), headers: { 'content-type': 'application/octet-stream' },
  });
  assert.equal(fw.status, 201, fw.text);
  firmwareUuid = fw.body.data.uuid;
  const dev = await hub.request('POST', '/api/orgs/acme/products/victim/devices', { token, body: { identifier: 'victim-1', description: 'keep me' } });
  assert.equal(dev.status, 201, dev.text);
});

after(async () => {
  if (hub) await hub.stop();
});

/**
 * Sends the request; asserts no 5xx and no slow answer. Returns the response and whether it
 * was stored (2xx) or refused (4xx).
 */
async function attempt(method, url, body, label) {
  const started = Date.now();
  const res = await hub.request(method, url, { token, body });
  const elapsed = Date.now() - started;
  assert.ok(res.status < 500, `${label}: ${method} ${url} → ${res.status} ${res.text}`);
  assert.ok(res.status >= 200 && res.status !== 207, `${label}: status ${res.status}`);
  assert.ok(elapsed < SLOW_MS, `${label}: answered in ${elapsed} ms (an injected pg_sleep ran?)`);
  if (res.status >= 400) {
    assert.ok(res.body && res.body.errors, `${label}: a refusal in the error envelope: ${res.text}`);
    outcomes.refused += 1;
  } else {
    outcomes.stored += 1;
  }
  return res;
}

/** For a stored value: GET `url` and check that `pick(data)` is the injected string, byte for byte. */
async function assertStoredLiterally(url, pick, value, label) {
  const res = await hub.request('GET', url, { token });
  assert.equal(res.status, 200, `${label}: read back ${url}: ${res.status} ${res.text}`);
  assert.deepEqual(pick(res.body.data), value, `${label}: stored literally`);
}

const enc = encodeURIComponent;

test('orgs: name', async () => {
  for (const [i, s] of INJECTIONS.entries()) {
    const res = await attempt('POST', '/api/orgs', { name: s }, `org #${i}`);
    if (res.status === 201) await assertStoredLiterally(`/api/orgs/${enc(s)}`, (d) => d.name, s, `org #${i}`);
  }
});

test('org users: email, name, role, password', async () => {
  for (const [i, s] of INJECTIONS.entries()) {
    for (const [field, body] of [
      ['email', { email: s, role: 'view', password: 'a long enough password' }],
      ['name', { email: `inj${i}@example.com`, name: s, role: 'view', password: 'a long enough password' }],
      ['role', { email: `role${i}@example.com`, role: s, password: 'a long enough password' }],
      ['password', { email: `pw${i}@example.com`, role: 'view', password: `long enough ${s}` }],
    ]) {
      const label = `user ${field} #${i}`;
      const res = await attempt('POST', '/api/orgs/acme/users', body, label);
      if (res.status === 201 && field !== 'password') {
        await assertStoredLiterally('/api/orgs/acme/users',
          (d) => (d.find((u) => u.email === body.email) ?? {})[field], s, label);
      }
      if (res.status === 201 && field === 'password') {
        const login = await hub.request('POST', '/api/users/auth', { body: { email: body.email, password: body.password } });
        assert.equal(login.status, 200, `${label}: the literal password logs in`);
        const wrong = await hub.request('POST', '/api/users/auth', { body: { email: body.email, password: "' OR '1'='1" } });
        assert.equal(wrong.status, 401, `${label}: an injected password does not`);
      }
    }
  }
});

test('products: name (create and rename)', async () => {
  for (const [i, s] of INJECTIONS.entries()) {
    const res = await attempt('POST', '/api/orgs/acme/products', { name: s }, `product #${i}`);
    if (res.status === 201) {
      await assertStoredLiterally(`/api/orgs/acme/products/${enc(s)}`, (d) => d.name, s, `product #${i}`);
    }
    await attempt('PUT', '/api/orgs/acme/products/demo', { name: s }, `rename to #${i}`).then(async (r) => {
      if (r.status === 200) {
        await assertStoredLiterally(`/api/orgs/acme/products/${enc(s)}`, (d) => d.name, s, `rename #${i}`);
        const back = await hub.request('PUT', `/api/orgs/acme/products/${enc(s)}`, { token, body: { name: 'demo' } });
        assert.equal(back.status, 200, back.text);
      }
    });
  }
});

test('devices: identifier, description, tags (create and update)', async () => {
  const base = '/api/orgs/acme/products/victim/devices';
  for (const [i, s] of INJECTIONS.entries()) {
    const a = await attempt('POST', base, { identifier: s }, `device identifier #${i}`);
    if (a.status === 201) await assertStoredLiterally(`${base}/${enc(s)}`, (d) => d.identifier, s, `identifier #${i}`);
    const id = `inj-${i}`;
    const b = await attempt('POST', base, { identifier: id, description: s, tags: [s] }, `device description/tags #${i}`);
    if (b.status === 201) {
      await assertStoredLiterally(`${base}/${id}`, (d) => [d.description, d.tags], [s, [s]], `description/tags #${i}`);
    } else {
      const c = await attempt('POST', base, { identifier: id, description: s }, `device description #${i}`);
      if (c.status === 201) await assertStoredLiterally(`${base}/${id}`, (d) => d.description, s, `description #${i}`);
    }
    await attempt('PATCH', `${base}/victim-1`, { description: s }, `device patch #${i}`).then(async (r) => {
      if (r.status === 200) await assertStoredLiterally(`${base}/victim-1`, (d) => d.description, s, `patch #${i}`);
    });
  }
});

test('signing keys: name (and key text)', async () => {
  for (const [i, s] of INJECTIONS.entries()) {
    // The same public key may be registered once per org: drop the previous copy first.
    const res = await attempt('POST', '/api/orgs/acme/keys', { name: s, key: `${keyPem}${i % 2 ? s : ''}` }, `key name #${i}`);
    if (res.status === 201) {
      await assertStoredLiterally(`/api/orgs/acme/keys/${enc(s)}`, (d) => d.name, s, `key #${i}`);
    }
    await attempt('POST', '/api/orgs/acme/keys', { name: `k${i}`, key: s }, `key text #${i}`);
  }
});

test('deployments: name, firmware, conditions, notes (create and preview)', async () => {
  const base = '/api/orgs/acme/products/demo/deployments';
  for (const [i, s] of INJECTIONS.entries()) {
    const res = await attempt('POST', base, { name: s, firmware: firmwareUuid, conditions: { tags: [s], version: '' } }, `deployment name #${i}`);
    if (res.status === 201) {
      await assertStoredLiterally(`${base}/${enc(s)}`, (d) => [d.name, d.conditions.tags], [s, [s]], `deployment #${i}`);
    }
    await attempt('POST', base, { name: `d${i}`, firmware: s }, `deployment firmware #${i}`);
    await attempt('POST', base, { name: `v${i}`, firmware: firmwareUuid, conditions: { version: s } }, `deployment version #${i}`);
    await attempt('POST', `${base}/preview`, { name: `p${i}`, firmware: firmwareUuid, notes: s, conditions: { tags: [s] } }, `preview #${i}`);
  }
});

test('CA certificates: description, common name, PEM fields', async () => {
  for (const [i, s] of INJECTIONS.entries()) {
    const res = await attempt('POST', '/api/orgs/acme/ca_certificates/managed', { description: s, common_name: s, validity_days: 30 }, `managed CA #${i}`);
    if (res.status === 201) assert.equal(res.body.data.description, s, `managed CA #${i}: description literal`);
    await attempt('POST', '/api/orgs/acme/ca_certificates', { cert: s, verification_cert: s, description: s }, `CA upload #${i}`);
  }
});

test('login and path segments: never authenticated by an injection, never a 5xx', async () => {
  for (const [i, s] of INJECTIONS.entries()) {
    const login = await hub.request('POST', '/api/users/auth', { body: { email: s, password: s } });
    assert.ok([400, 401, 422].includes(login.status), `login #${i}: ${login.status} ${login.text}`);
    const adminInj = await hub.request('POST', '/api/users/auth', { body: { email: hub.admin.email, password: s } });
    assert.equal(adminInj.status, 401, `login admin with #${i}`);
    for (const url of [`/api/orgs/${enc(s)}`, `/api/orgs/acme/products/${enc(s)}/devices`,
      `/api/orgs/acme/products/victim/devices/${enc(s)}`, `/api/orgs/acme/keys/${enc(s)}x`,
      `/api/orgs/acme/products/victim/devices?search=${enc(s)}`]) {
      const res = await hub.request('GET', url, { token });
      assert.ok(res.status < 500, `GET ${url} → ${res.status} ${res.text}`);
    }
  }
});

// PostgreSQL text cannot hold U+0000, so a NUL can only be refused (libpq takes C strings: "a\0b"
// was once stored as "a", and a NUL in tags answered 500). Every JSON body is checked on parsing.
test('a NUL character in a string field is refused with 422, never truncated or a 500', async () => {
  const s = 'a\u0000b';
  const base = '/api/orgs/acme/products/victim/devices';
  const cases = [
    ['POST', base, { identifier: 'nul-1', description: s }],
    ['POST', base, { identifier: 'nul-2', tags: [s] }],
    ['POST', '/api/orgs/acme/products/demo/deployments', { name: 'nul-3', firmware: firmwareUuid, conditions: { tags: [s] } }],
    ['PATCH', `${base}/victim-1`, { description: s }],
  ];
  const answers = [];
  for (const [method, url, body] of cases) {
    const res = await hub.request(method, url, { token, body });
    answers.push(`${method} ${url} ${JSON.stringify(body)} → ${res.status}`);
  }
  assert.ok(answers.every((a) => / → 4\d\d$/.test(a)), answers.join('\n'));
});

test('afterwards the database is intact and nothing leaked into other rows', async () => {
  const orgs = await hub.request('GET', '/api/orgs', { token });
  assert.equal(orgs.status, 200);
  assert.ok(orgs.body.data.some((o) => o.name === 'acme'));
  const victim = await hub.request('GET', '/api/orgs/acme/products/victim/devices', { token });
  assert.equal(victim.status, 200);
  assert.ok(victim.body.data.some((d) => d.identifier === 'victim-1'), 'victim-1 still there');
  const demo = await hub.request('GET', '/api/orgs/acme/products/demo', { token });
  assert.equal(demo.status, 200, 'product demo intact');
  const me = await hub.request('GET', '/api/orgs/acme', { token });
  assert.equal(me.body.data.role, 'admin');
  const users = await hub.request('GET', '/api/orgs/acme/users', { token });
  const escalated = users.body.data.filter((u) => u.email !== hub.admin.email && u.role === 'admin');
  assert.deepEqual(escalated, [], 'no injected role escalation');
  assert.ok(outcomes.stored > 0 && outcomes.refused > 0, `stored ${outcomes.stored}, refused ${outcomes.refused}`);
  assert.doesNotMatch(hub.log(), /syntax error at or near|unterminated quoted string/, 'no SQL text was built from input');
});
