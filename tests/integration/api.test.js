'use strict';
// The admin API against a real otahubd: authentication, orgs, org users, products, isolation
// between orgs, roles, router errors, limits, probes and TLS. Every response is checked against
// proto/openapi.yaml (tests/e2e/lib/contract.js); the last test reports which documented routes
// were exercised and requires every foundation route to be among them.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const { isDeepStrictEqual } = require('node:util');
const { startHub, createDatabase, dropDatabase, runBin } = require('../e2e/lib/hub');
const { contractClient, loadContract, ContractError } = require('../e2e/lib/contract');

const BODY_LIMIT = 4096;
const FOUNDATION_TAGS = ['health', 'users', 'orgs', 'products'];
const MUTATIONS = ['POST', 'PUT', 'PATCH', 'DELETE'];
const PASSWORD = 'a long enough password';

const contract = loadContract();
let hub;
let api;
let admin;   // token of admin@example.com, admin of acme (and later of bravo)
let alice;   // admin of acme only (isolation test)
let victor;  // viewer of acme (roles test)

/** Fills a path template; unknown parameters become "x". */
function fill(template, values) {
  return template.replace(/\{([^}]+)\}/g, (_, name) => encodeURIComponent(values[name] ?? 'x'));
}

/** A valid body for each foundation mutation, so only authorisation can refuse it. */
function bodyFor(method, template, values = {}) {
  const bodies = {
    'POST /api/orgs': { name: `org-${Date.now()}` },
    'POST /api/orgs/{org}/users': { email: 'mallory@example.com', role: 'admin', password: PASSWORD },
    'PUT /api/orgs/{org}/users/{email}': { role: 'view' },
    'POST /api/orgs/{org}/products': { name: 'planted' },
    'PUT /api/orgs/{org}/products/{product}': { name: values.renameTo || 'renamed' },
    'PATCH /api/orgs/{org}/products/{product}': { name: values.renameTo || 'renamed' },
  };
  const key = `${method} ${template}`;
  if (key in bodies) return bodies[key];
  return method === 'DELETE' ? undefined : {};
}

function isFoundation(route) {
  return (route.operation.tags || []).some((t) => FOUNDATION_TAGS.includes(t));
}

function needsAuth(route) {
  return (route.operation.security ?? contract.spec.security ?? []).length > 0;
}

function orgRoutes() {
  return contract.routes.filter((r) => r.template.startsWith('/api/orgs/{org}'));
}

/** True when the route's 200 answer is `{"data": [...]}` (a collection: state, not a computed value). */
function returnsList(route) {
  const ok = route.operation.responses && route.operation.responses['200'];
  if (!ok) return false;
  const response = contract.deref(ok, '').node;
  const media = response.content && response.content['application/json'];
  if (!media || !media.schema) return false;
  const schema = contract.deref(media.schema, '').node;
  const data = schema.properties && schema.properties.data && contract.deref(schema.properties.data, '').node;
  return Boolean(data && data.type === 'array');
}

/** Everything an admin can read about an org: foundation GETs and every documented collection. */
async function snapshotOrg(org, product) {
  const snapshot = {};
  for (const route of orgRoutes()) {
    if (route.method !== 'GET' || !(isFoundation(route) || returnsList(route))) continue;
    // The hub's nodes are live cluster state (heartbeats move on their own), not org data.
    if (route.template === '/api/orgs/{org}/nodes') continue;
    const params = route.template.match(/\{[^}]+\}/g).map((p) => p.slice(1, -1));
    if (params.some((p) => p !== 'org' && p !== 'product')) continue;
    const res = await hub.request('GET', fill(route.template, { org, product }), { token: admin });
    snapshot[route.template] = { status: res.status, body: res.body };
  }
  return snapshot;
}

async function login(email, password) {
  const res = await api.expect(200, 'POST', '/api/users/auth', { body: { email, password, note: 'api test' } });
  return res.body.data.token;
}

async function addMember(org, email, role) {
  await api.expect(201, 'POST', `/api/orgs/${org}/users`, {
    token: admin, body: { email, role, password: PASSWORD, name: email.split('@')[0] },
  });
  return login(email, PASSWORD);
}

test.before(async () => {
  hub = await startHub({ env: { OTAHUB_API_BODY_LIMIT: String(BODY_LIMIT) } });
  api = contractClient(hub, contract);
  admin = await login(hub.admin.email, hub.admin.password);
});

test.after(async () => {
  if (hub) await hub.stop();
});

test('/healthz and /readyz answer 200 {"status":"ok"}', async () => {
  const live = await api.expect(200, 'GET', '/healthz');
  assert.deepEqual(live.body, { status: 'ok' });
  const ready = await api.expect(200, 'GET', '/readyz');
  assert.deepEqual(ready.body, { status: 'ok' });
});

test('/readyz answers 503 with a reason until the schema is migrated, then 200', async () => {
  const db = createDatabase('otahub_ready');
  const fresh = await startHub({ database: db, admin: null });   // no `otahubd migrate` first
  try {
    const freshApi = contractClient(fresh, contract);
    const live = await freshApi.expect(200, 'GET', '/healthz');
    assert.deepEqual(live.body, { status: 'ok' });
    const pending = await freshApi.expect(503, 'GET', '/readyz');
    assert.deepEqual(pending.body, { status: 'unavailable', reason: 'migrations pending' });
    runBin('otahubd', ['migrate'], fresh.env);
    const ready = await freshApi.expect(200, 'GET', '/readyz');
    assert.deepEqual(ready.body, { status: 'ok' });
  } finally {
    await fresh.stop();
    dropDatabase(db.name);
  }
});

test('every response carries a fresh x-request-id', async () => {
  const ids = new Set();
  for (const [method, url] of [['GET', '/healthz'], ['GET', '/healthz'], ['GET', '/api/users/me'],
    ['GET', '/no/such/route']]) {
    const res = await hub.request(method, url);
    assert.match(res.headers['x-request-id'] || '', /^[0-9a-f]{16}$/, `${method} ${url}`);
    ids.add(res.headers['x-request-id']);
  }
  assert.equal(ids.size, 4, 'ids are unique');
});

test('login: success returns name, email and an nhu_ token; the deprecated alias works', async () => {
  const res = await api.expect(200, 'POST', '/api/users/auth', {
    body: { email: hub.admin.email, password: hub.admin.password, note: 'laptop' },
  });
  assert.equal(res.body.data.email, hub.admin.email);
  assert.match(res.body.data.token, /^nhu_[0-9A-Za-z]{40,}$/);
  // E-mail matching is case-insensitive.
  const upper = await api.expect(200, 'POST', '/api/users/auth', {
    body: { email: hub.admin.email.toUpperCase(), password: hub.admin.password },
  });
  assert.notEqual(upper.body.data.token, res.body.data.token, 'each login issues a new token');
  const alias = await api.expect(200, 'POST', '/api/users/login', {
    body: { email: hub.admin.email, password: hub.admin.password },
  });
  assert.match(alias.body.data.token, /^nhu_/);
  await api.expect(200, 'GET', '/api/users/me', { token: alias.body.data.token });
});

test('login: wrong password and unknown e-mail give the same 401', async () => {
  const wrong = await api.expect(401, 'POST', '/api/users/auth', {
    body: { email: hub.admin.email, password: 'not the password' },
  });
  const unknown = await api.expect(401, 'POST', '/api/users/auth', {
    body: { email: 'nobody@example.com', password: 'not the password' },
  });
  assert.deepEqual(wrong.body, unknown.body, 'no account enumeration through the message');
  assert.equal(typeof wrong.body.errors.detail, 'string');
  await api.expect(401, 'POST', '/api/users/login', { body: { email: 'nobody@example.com', password: 'x' } });
});

test('login: missing or mistyped fields give 422 naming the field; bad JSON gives 400', async () => {
  const cases = [
    [{ password: 'x' }, 'email'],
    [{ email: hub.admin.email }, 'password'],
    [{ email: '', password: 'x' }, 'email'],
    [{ email: 42, password: 'x' }, 'email'],
    [{ email: hub.admin.email, password: null }, 'password'],
    [{}, 'email'],
  ];
  for (const [body, field] of cases) {
    const res = await api.expect(422, 'POST', '/api/users/auth', { body });
    assert.ok(Array.isArray(res.body.errors[field]), `${JSON.stringify(body)} names ${field}: ${res.text}`);
  }
  for (const raw of ['{"email":', 'not json', '[1,2]', '"string"', '{"a":1}{']) {
    const res = await api.expect(400, 'POST', '/api/users/auth', {
      raw, headers: { 'content-type': 'application/json' },
    });
    assert.match(res.body.errors.detail, /JSON/, raw);
  }
});

test('tokens work with "Bearer" and "token" schemes; none, unknown or malformed give 401', async () => {
  const me = await api.expect(200, 'GET', '/api/users/me', { token: admin });
  assert.deepEqual(Object.keys(me.body.data).sort(), ['email', 'name']);
  assert.equal(me.body.data.email, hub.admin.email);
  for (const header of [`Bearer ${admin}`, `bearer ${admin}`, `token ${admin}`, `Token ${admin}`]) {
    const res = await api.expect(200, 'GET', '/api/users/me', { headers: { authorization: header } });
    assert.equal(res.body.data.email, hub.admin.email, header);
  }
  const refused = [undefined, '', 'Bearer', 'Bearer ', `Basic ${admin}`, admin, `Bearer ${admin}x`,
    `Bearer ${admin.slice(0, -1)}`, 'Bearer nhu_00000000000000000000000000000000000000000000',
    `Bearer ${'a'.repeat(600)}`, 'token '];
  for (const header of refused) {
    const headers = header === undefined ? {} : { authorization: header };
    const res = await api.expect(401, 'GET', '/api/users/me', { headers });
    assert.ok(res.body.errors.detail, String(header));
  }
});

test('every authenticated foundation route answers 401 without a token or with a bad one, whatever the body', async () => {
  let checked = 0;
  for (const route of contract.routes.filter((r) => isFoundation(r) && needsAuth(r))) {
    const url = fill(route.template, { org: 'acme', product: 'x', email: hub.admin.email });
    for (const token of [undefined, 'nhu_bogus']) {
      await api.expect(401, route.method, url, { token, body: MUTATIONS.includes(route.method) ? { name: 7 } : undefined });
      checked += 1;
    }
  }
  assert.ok(checked >= 26, `only ${checked} checks`);
});

test('orgs: list, create (plain and wrapped), get; duplicates 409; invalid names 422', async () => {
  const list = await api.expect(200, 'GET', '/api/orgs', { token: admin });
  assert.deepEqual(list.body.data.map((o) => [o.name, o.role]), [['acme', 'admin']]);

  const created = await api.expect(201, 'POST', '/api/orgs', { token: admin, body: { name: 'bravo' } });
  assert.equal(created.body.data.name, 'bravo');
  assert.equal(created.body.data.role, 'admin');
  await api.expect(201, 'POST', '/api/orgs', { token: admin, body: { org: { name: 'charlie.dev_1' } } });

  for (const name of ['bravo', 'BRAVO']) {
    const dup = await api.expect(409, 'POST', '/api/orgs', { token: admin, body: { name } });
    assert.deepEqual(dup.body.errors.name, ['has already been taken'], name);
  }
  for (const name of ['', '-lead', '.dot', 'has space', 'a/b', 'x'.repeat(65), 'ünï', 12, null]) {
    const res = await api.expect(422, 'POST', '/api/orgs', { token: admin, body: { name } });
    assert.ok(Array.isArray(res.body.errors.name), `${JSON.stringify(name)}: ${res.text}`);
  }
  await api.expect(422, 'POST', '/api/orgs', { token: admin, body: {} });
  await api.expect(400, 'POST', '/api/orgs', { token: admin, raw: '{', headers: { 'content-type': 'application/json' } });

  const again = await api.expect(200, 'GET', '/api/orgs', { token: admin });
  assert.deepEqual(again.body.data.map((o) => o.name), ['acme', 'bravo', 'charlie.dev_1']);
  const one = await api.expect(200, 'GET', '/api/orgs/bravo', { token: admin });
  assert.deepEqual(one.body.data, created.body.data);
  await api.expect(200, 'GET', '/api/orgs/BRAVO', { token: admin });   // names are case-insensitive
  await api.expect(404, 'GET', '/api/orgs/nope', { token: admin });
});

test('org users: add (new and existing user), list, change role, remove; errors', async () => {
  const acme = '/api/orgs/acme/users';
  const added = await api.expect(201, 'POST', acme, {
    token: admin, body: { email: 'dana@example.com', role: 'view', name: 'Dana', password: PASSWORD },
  });
  assert.deepEqual(added.body.data, { name: 'Dana', email: 'dana@example.com', role: 'view' });
  const dana = await login('dana@example.com', PASSWORD);

  // An existing user joins another org by e-mail alone (wrapped body form).
  const joined = await api.expect(201, 'POST', '/api/orgs/bravo/users', {
    token: admin, body: { user: { email: 'DANA@example.com', role: 'manage' } },
  });
  assert.equal(joined.body.data.role, 'manage');
  const danaOrgs = await api.expect(200, 'GET', '/api/orgs', { token: dana });
  assert.deepEqual(danaOrgs.body.data.map((o) => [o.name, o.role]), [['acme', 'view'], ['bravo', 'manage']]);

  const dup = await api.expect(409, 'POST', acme, { token: admin, body: { email: 'dana@example.com', role: 'admin' } });
  assert.ok(dup.body.errors.email);
  const invalid = [
    [{ email: 'ghost@example.com', role: 'view' }, 'email'],            // unknown user, no password
    [{ email: 'dana@example.com', role: 'owner' }, 'role'],
    [{ email: 'dana@example.com' }, 'role'],
    [{ role: 'view' }, 'email'],
    [{ email: 'new@example.com', role: 'view', password: 'short' }, 'password'],
    [{ email: 'not-an-address', role: 'view', password: PASSWORD }, 'email'],
  ];
  for (const [body, field] of invalid) {
    const res = await api.expect(422, 'POST', acme, { token: admin, body });
    assert.ok(Array.isArray(res.body.errors[field]), `${JSON.stringify(body)}: ${res.text}`);
  }

  const members = await api.expect(200, 'GET', acme, { token: admin });
  assert.deepEqual(members.body.data.map((m) => [m.email, m.role]),
    [['admin@example.com', 'admin'], ['dana@example.com', 'view']]);

  const changed = await api.expect(200, 'PUT', `${acme}/Dana%40Example.com`, { token: admin, body: { role: 'manage' } });
  assert.deepEqual(changed.body.data, { name: 'Dana', email: 'dana@example.com', role: 'manage' });
  await api.expect(200, 'PUT', `${acme}/dana@example.com`, { token: admin, body: { user: { role: 'view' } } });
  await api.expect(422, 'PUT', `${acme}/dana@example.com`, { token: admin, body: { role: 'boss' } });
  await api.expect(404, 'PUT', `${acme}/ghost@example.com`, { token: admin, body: { role: 'view' } });

  await api.expect(204, 'DELETE', `${acme}/dana@example.com`, { token: admin });
  await api.expect(404, 'DELETE', `${acme}/dana@example.com`, { token: admin });
  await api.expect(404, 'GET', '/api/orgs/acme', { token: dana });   // no longer a member
  const after = await api.expect(200, 'GET', acme, { token: admin });
  assert.deepEqual(after.body.data.map((m) => m.email), ['admin@example.com']);
});

test('org users: the last admin can be neither demoted nor removed', async () => {
  const acme = '/api/orgs/acme/users';
  const demote = await api.expect(409, 'PUT', `${acme}/admin@example.com`, { token: admin, body: { role: 'manage' } });
  assert.match(demote.body.errors.detail, /admin/);
  await api.expect(409, 'DELETE', `${acme}/admin@example.com`, { token: admin });
  await api.expect(200, 'PUT', `${acme}/admin@example.com`, { token: admin, body: { role: 'admin' } });

  // With a second admin the first can step down; then the second is the last one.
  const erin = await addMember('acme', 'erin@example.com', 'admin');
  await api.expect(200, 'PUT', `${acme}/admin@example.com`, { token: erin, body: { role: 'manage' } });
  await api.expect(409, 'DELETE', `${acme}/erin@example.com`, { token: erin });
  await api.expect(403, 'PUT', `${acme}/admin@example.com`, { token: admin, body: { role: 'admin' } });
  await api.expect(200, 'PUT', `${acme}/admin@example.com`, { token: erin, body: { role: 'admin' } });
  await api.expect(204, 'DELETE', `${acme}/erin@example.com`, { token: admin });
  const members = await api.expect(200, 'GET', acme, { token: admin });
  assert.deepEqual(members.body.data.map((m) => [m.email, m.role]), [['admin@example.com', 'admin']]);
});

test('products: create, list, get, rename (PUT and PATCH), delete; 409 and 422', async () => {
  const base = '/api/orgs/acme/products';
  const empty = await api.expect(200, 'GET', base, { token: admin });
  assert.deepEqual(empty.body.data, []);

  const gw = await api.expect(201, 'POST', base, { token: admin, body: { name: 'gateway' } });
  assert.equal(gw.body.data.name, 'gateway');
  const odd = 'Sensor Hub ü+%';
  await api.expect(201, 'POST', base, { token: admin, body: { product: { name: odd } } });
  const got = await api.expect(200, 'GET', `${base}/${encodeURIComponent(odd)}`, { token: admin });
  assert.equal(got.body.data.name, odd);

  const dup = await api.expect(409, 'POST', base, { token: admin, body: { name: 'gateway' } });
  assert.deepEqual(dup.body.errors.name, ['has already been taken']);
  for (const name of ['', ' lead', 'trail ', 'a/b', 'a\\b', 'a?b', 'a#b', 'tab\there', 'x'.repeat(101), 5, null]) {
    const res = await api.expect(422, 'POST', base, { token: admin, body: { name } });
    assert.ok(Array.isArray(res.body.errors.name), `${JSON.stringify(name)}: ${res.text}`);
  }
  await api.expect(201, 'POST', base, { token: admin, body: { name: 'x'.repeat(100) } });
  await api.expect(204, 'DELETE', `${base}/${'x'.repeat(100)}`, { token: admin });

  const list = await api.expect(200, 'GET', base, { token: admin });
  assert.deepEqual(list.body.data.map((p) => p.name).sort(), [odd, 'gateway'].sort());

  const renamed = await api.expect(200, 'PUT', `${base}/gateway`, { token: admin, body: { name: 'gateway2' } });
  assert.equal(renamed.body.data.name, 'gateway2');
  assert.equal(renamed.body.data.inserted_at, gw.body.data.inserted_at);
  await api.expect(404, 'GET', `${base}/gateway`, { token: admin });
  await api.expect(200, 'PATCH', `${base}/gateway2`, { token: admin, body: { product: { name: 'gateway' } } });
  await api.expect(200, 'PUT', `${base}/gateway`, { token: admin, body: { name: 'gateway' } });   // same name
  await api.expect(409, 'PATCH', `${base}/gateway`, { token: admin, body: { name: odd } });
  await api.expect(422, 'PUT', `${base}/gateway`, { token: admin, body: { name: 'a/b' } });
  await api.expect(404, 'PUT', `${base}/nope`, { token: admin, body: { name: 'fine' } });
  await api.expect(400, 'PATCH', `${base}/gateway`, { token: admin, raw: '[', headers: { 'content-type': 'application/json' } });

  await api.expect(204, 'DELETE', `${base}/${encodeURIComponent(odd)}`, { token: admin });
  await api.expect(404, 'DELETE', `${base}/${encodeURIComponent(odd)}`, { token: admin });
  await api.expect(404, 'GET', '/api/orgs/nope/products', { token: admin });
  const final = await api.expect(200, 'GET', base, { token: admin });
  assert.deepEqual(final.body.data.map((p) => p.name), ['gateway']);
});

test('isolation: a member of acme gets 404 (never 403) on every foundation route of bravo and changes nothing', async () => {
  await api.expect(201, 'POST', '/api/orgs/bravo/products', { token: admin, body: { name: 'secret' } });
  alice = await addMember('acme', 'alice@example.com', 'admin');
  const before = await snapshotOrg('bravo', 'secret');
  assert.equal(before['/api/orgs/{org}/products'].body.data.length, 1);

  const aliceOrgs = await api.expect(200, 'GET', '/api/orgs', { token: alice });
  assert.deepEqual(aliceOrgs.body.data.map((o) => o.name), ['acme']);

  let checked = 0;
  for (const route of orgRoutes().filter(isFoundation)) {
    const values = { org: 'bravo', product: 'secret', email: hub.admin.email, renameTo: 'stolen' };
    const body = bodyFor(route.method, route.template, values);
    const res = await api.expect(404, route.method, fill(route.template, values), { token: alice, body });
    const ghost = await api.expect(404, route.method, fill(route.template, { ...values, org: 'no-such-org' }),
      { token: alice, body });
    assert.deepEqual(res.body, ghost.body, `${route.method} ${route.template}: same answer as a missing org`);
    checked += 1;
  }
  assert.ok(checked >= 10, `only ${checked} routes`);
  assert.deepEqual(await snapshotOrg('bravo', 'secret'), before, 'bravo unchanged');
  // Alice's own org still works for her.
  await api.expect(200, 'GET', '/api/orgs/acme/products', { token: alice });
});

test('roles: a view member gets 403 on every foundation mutation of its own org and changes nothing', async () => {
  victor = await addMember('acme', 'victor@example.com', 'view');
  const before = await snapshotOrg('acme', 'gateway');
  let checked = 0;
  for (const route of orgRoutes().filter(isFoundation)) {
    const values = { org: 'acme', product: 'gateway', email: hub.admin.email, renameTo: 'by-viewer' };
    const url = fill(route.template, values);
    if (route.method === 'GET') {
      await api.expect(200, 'GET', url, { token: victor });
      continue;
    }
    const res = await api.expect(403, route.method, url, { token: victor, body: bodyFor(route.method, route.template, values) });
    assert.match(res.body.errors.detail, /role/);
    checked += 1;
  }
  assert.ok(checked >= 7, `only ${checked} mutations`);
  assert.deepEqual(await snapshotOrg('acme', 'gateway'), before, 'acme unchanged');
});

test('every other documented org route (devices, firmware, keys, CA certificates, ...) authenticates, then checks membership and role, before reading the body', async (t) => {
  // Empty bodies and placeholder ids: only a handler that authorises first answers 401/404/403.
  const others = orgRoutes().filter((r) => !isFoundation(r));
  const beforeBravo = await snapshotOrg('bravo', 'secret');
  const beforeAcme = await snapshotOrg('acme', 'gateway');
  const violations = [];
  const request = async (method, url, opts) => {
    try {
      return await api.request(method, url, opts);   // contract-checked
    } catch (err) {
      if (!(err instanceof ContractError)) throw err;
      violations.push(err.message);
      return { status: null, body: null, text: '' };
    }
  };
  const expectStatus = async (label, wanted, method, url, opts, hint) => {
    const res = await request(method, url, opts);
    if (res.status === null) return res;
    t.diagnostic(`${method} ${url} ${label}: ${res.status}`);
    if (!wanted.includes(res.status)) {
      violations.push(`${method} ${url} ${label} answered ${res.status}, not ${wanted.join('/')} (${hint}): ${res.text}`);
    }
    return res;
  };
  for (const route of others) {
    const body = bodyFor(route.method, route.template);
    const acmeUrl = fill(route.template, { org: 'acme', product: 'gateway' });
    if (needsAuth(route)) {
      for (const token of [undefined, 'nhu_bogus']) {
        await expectStatus(token ? 'with a bad token' : 'without a token', [401], route.method, acmeUrl,
          { token, body }, 'authenticate before validating the body');
      }
    }
    const bravoUrl = fill(route.template, { org: 'bravo', product: 'secret' });
    const res = await expectStatus('as a non-member', [404], route.method, bravoUrl, { token: alice, body },
      'check org membership before validating the body');
    const ghost = await request(route.method, fill(route.template, { org: 'no-such-org', product: 'secret' }),
      { token: alice, body });
    if (res.status === 404 && !isDeepStrictEqual(res.body, ghost.body)) {
      violations.push(`${route.method} ${route.template}: ${res.text} differs from the missing-org answer ${ghost.text}`);
    }
    if (MUTATIONS.includes(route.method)) {
      // 404 is fine when the handler looks the placeholder id up before checking the role. A POST
      // that only reads (a deployment preview) is open to viewers and documents no 403: any other
      // documented answer will do (the unchanged snapshots below show it changed nothing).
      const roleGated = Boolean(route.operation.responses['403']);
      const allowed = roleGated ? [403, 404] : Object.keys(route.operation.responses).map(Number);
      await expectStatus('as a viewer', allowed, route.method, acmeUrl, { token: victor, body },
        roleGated ? 'check the role before validating the body' : 'viewers may call it');
    }
  }
  t.diagnostic(`${others.length} other org routes checked`);
  assert.deepEqual(await snapshotOrg('bravo', 'secret'), beforeBravo, 'bravo unchanged');
  assert.deepEqual(await snapshotOrg('acme', 'gateway'), beforeAcme, 'acme unchanged');
  assert.deepEqual(violations, []);
});

test('roles: a manage member may change products but not members', async () => {
  const mona = await addMember('acme', 'mona@example.com', 'manage');
  const base = '/api/orgs/acme/products';
  await api.expect(201, 'POST', base, { token: mona, body: { name: 'by-manager' } });
  await api.expect(200, 'PUT', `${base}/by-manager`, { token: mona, body: { name: 'by-manager2' } });
  await api.expect(204, 'DELETE', `${base}/by-manager2`, { token: mona });
  await api.expect(403, 'POST', '/api/orgs/acme/users', {
    token: mona, body: { email: 'mona2@example.com', role: 'admin', password: PASSWORD },
  });
  await api.expect(403, 'PUT', '/api/orgs/acme/users/mona@example.com', { token: mona, body: { role: 'admin' } });
  await api.expect(403, 'DELETE', '/api/orgs/acme/users/admin@example.com', { token: mona });
  const me = await api.expect(200, 'GET', '/api/orgs/acme', { token: mona });
  assert.equal(me.body.data.role, 'manage');
});

test('unknown routes answer 404 and wrong methods 405 with an allow header, in the error envelope', async () => {
  for (const url of ['/api/nope', '/api/orgs/acme/nope', '/api/orgs/acme/products/gateway/nope/deeper', '/']) {
    const res = await api.undocumented('GET', url, { token: admin });
    assert.equal(res.status, 404, url);
  }
  const cases = [
    ['DELETE', '/api/orgs', ['GET', 'POST']],
    ['GET', '/api/orgs/acme/users/admin@example.com', ['DELETE', 'PUT']],
    ['POST', '/healthz', ['GET']],
    ['GET', '/api/users/auth', ['POST']],
    ['POST', '/api/orgs/acme/products/gateway', ['DELETE', 'GET', 'PATCH', 'PUT']],
  ];
  for (const [method, url, allowed] of cases) {
    const res = await api.undocumented(method, url, { token: admin, body: method === 'GET' ? undefined : {} });
    assert.equal(res.status, 405, `${method} ${url}`);
    const allow = (res.headers.allow || '').split(',').map((m) => m.trim()).filter(Boolean).sort();
    // The allow list names every method the spec documents for that path, and only those.
    const documented = [...new Set(contract.matchPath(url).map((r) => r.method))].sort();
    assert.deepEqual(allow, allowed, `${method} ${url}`);
    assert.deepEqual(allow, documented, `${method} ${url} vs the spec`);
  }
  const bad = await api.undocumented('GET', '/api/orgs/%zz', { token: admin });
  assert.equal(bad.status, 400);
});

test(`bodies over OTAHUB_API_BODY_LIMIT (${BODY_LIMIT}) answer 413; up to it they are read`, async () => {
  const base = '/api/orgs/acme/products';
  const prefix = '{"name": "padded"';
  const padded = `${prefix}${' '.repeat(BODY_LIMIT - prefix.length - 1)}}`;
  assert.equal(Buffer.byteLength(padded), BODY_LIMIT);
  await api.expect(201, 'POST', base, { token: admin, raw: padded, headers: { 'content-type': 'application/json' } });
  const over = `{"name": "too-big"${' '.repeat(BODY_LIMIT)}}`;
  const res = await api.expect(413, 'POST', base, { token: admin, raw: over, headers: { 'content-type': 'application/json' } });
  assert.match(res.body.errors.detail, /limit/);
  await api.expect(413, 'POST', '/api/users/auth', { raw: over, headers: { 'content-type': 'application/json' } });

  // Without a content-length (chunked) the limit applies while reading.
  const chunked = await new Promise((resolve, reject) => {
    const req = http.request(`${hub.apiUrl}${base}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    }, (r) => {
      const chunks = [];
      r.on('data', (c) => chunks.push(c));
      r.on('end', () => resolve({ status: r.statusCode, headers: r.headers, text: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.write('{"name": "chunked"');
    req.write(' '.repeat(BODY_LIMIT));
    req.end('}');
  });
  contract.checkResponse('POST', base, chunked.status, chunked.headers, JSON.parse(chunked.text));
  assert.equal(chunked.status, 413, chunked.text);
  const list = await api.expect(200, 'GET', base, { token: admin });
  assert.deepEqual(list.body.data.map((p) => p.name).sort(), ['gateway', 'padded']);
});

test('the API serves TLS with the configured certificate', async () => {
  const tlsHub = await startHub({ apiTls: true });
  try {
    assert.match(tlsHub.apiUrl, /^https:\/\//);
    const tlsApi = contractClient(tlsHub, contract);
    await tlsApi.expect(200, 'GET', '/healthz');
    const token = (await tlsApi.expect(200, 'POST', '/api/users/auth', {
      body: { email: tlsHub.admin.email, password: tlsHub.admin.password },
    })).body.data.token;
    const me = await tlsApi.expect(200, 'GET', '/api/users/me', { token });
    assert.equal(me.body.data.email, tlsHub.admin.email);
    // The certificate chains to the test server CA only: without that CA the client refuses it.
    const refused = await new Promise((resolve) => {
      https.get(`${tlsHub.apiUrl}/healthz`, (r) => { r.resume(); resolve(null); })
        .on('error', (e) => resolve(e));
    });
    assert.ok(refused, 'a client without the CA must refuse the certificate');
    assert.match(refused.code, /SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/);
    // The peer certificate is the one in OTAHUB_TLS_CERT.
    const peer = await new Promise((resolve, reject) => {
      const req = https.get(`${tlsHub.apiUrl}/healthz`, { ca: fs.readFileSync(tlsHub.certs.ca) }, (r) => {
        resolve(r.socket.getPeerCertificate());
        r.resume();
      });
      req.on('error', reject);
    });
    assert.equal(peer.subject.CN, 'localhost');
    // Plain HTTP to the TLS port gets no HTTP answer.
    const plain = await new Promise((resolve) => {
      const req = http.get(`http://127.0.0.1:${tlsHub.apiPort}/healthz`, (r) => { r.resume(); resolve(r.statusCode); });
      req.on('error', (e) => resolve(e.code));
      req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    });
    assert.notEqual(plain, 200);
  } finally {
    await tlsHub.stop();
  }
});

test('coverage: every documented foundation route was exercised, and succeeded at least once', (t) => {
  t.diagnostic('contract coverage (documented routes, statuses seen):');
  for (const line of contract.coverageReport().split('\n')) t.diagnostic(line);
  const foundation = contract.coverage({ tags: FOUNDATION_TAGS });
  assert.deepEqual(foundation.filter((r) => !r.statuses.some((s) => s >= 200 && s < 300))
    .map((r) => `${r.method} ${r.path} (${r.statuses.join(', ') || 'never called'})`), []);
});
