'use strict';
// The audit log against a real otahubd and PostgreSQL: every successful mutation of the admin API
// leaves exactly one row (the handler's own, or the router's generic one) with actor, org, action,
// target and request id; refused requests leave none; GET /audit_logs filters and pages.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { startHub } = require('../e2e/lib/hub');
const { loadContract } = require('../e2e/lib/contract');

const fixtures = path.join(__dirname, '..', 'fixtures', 'fwup');
const ADMIN = 'admin@example.com';
const PRODUCT = '/api/orgs/acme/products/demo';
const MUTATIONS = ['POST', 'PUT', 'PATCH', 'DELETE'];

let hub;
let token;
let startedAt;
/** Request ids of the successful mutations of the first test, by action. */
const done = new Map();

function psql(sql) {
  return execFileSync('psql', [hub.db.url, '-qAt', '-v', 'ON_ERROR_STOP=1', '-c', sql]).toString().trim();
}

/** Audit rows of one request id (any org), as {org, actor, action, resource_type, resource}. */
function rowsOf(requestId) {
  assert.match(requestId, /^[0-9a-f]{16}$/, 'every answer carries its x-request-id');
  const out = psql(`SELECT coalesce((SELECT name FROM orgs WHERE id = a.org_id), '-') || '|' || actor_type || '|' ||
    actor || '|' || action || '|' || resource_type || '|' || resource FROM audit_logs a
    WHERE request_id = '${requestId}' ORDER BY id`);
  return out === '' ? [] : out.split('\n').map((line) => {
    const [org, actorType, actor, action, resourceType, resource] = line.split('|');
    return { org, actorType, actor, action, resourceType, resource };
  });
}

/** Sends a mutation that must succeed and checks its one audit row. */
async function mutation(method, urlPath, body, want, options = {}) {
  const res = await hub.request(method, urlPath, { token: options.token ?? token, body, ...options.request });
  assert.ok(res.status >= 200 && res.status < 300, `${method} ${urlPath}: ${res.status} ${res.text}`);
  const rows = rowsOf(res.headers['x-request-id']);
  assert.equal(rows.length, 1, `exactly one audit row for ${method} ${urlPath}: ${JSON.stringify(rows)}`);
  const row = rows[0];
  assert.equal(row.action, want.action, `${method} ${urlPath}`);
  const target = typeof want.resource === 'function' ? want.resource(res) : want.resource ?? res.body.data.serial;
  assert.equal(row.resource, target, `${method} ${urlPath} target`);
  if (want.resourceType) assert.equal(row.resourceType, want.resourceType);
  assert.equal(row.actorType, 'user');
  assert.equal(row.actor, want.actor ?? ADMIN, `${method} ${urlPath} actor`);
  assert.equal(row.org, want.org ?? 'acme', `${method} ${urlPath} org`);
  done.set(want.action, res.headers['x-request-id']);
  return res;
}

before(async () => {
  hub = await startHub();
  token = await hub.login();
  startedAt = new Date(Date.now() - 1000).toISOString();
});

after(async () => {
  if (hub) await hub.stop();
});

test('every resource: one audit row per successful mutation (actor, org, action, target, request id)', async () => {
  // Users and tokens (outside any org), orgs and members.
  const login = await hub.request('POST', '/api/users/auth',
    { body: { email: ADMIN, password: 'correct horse battery', note: 'audit test' } });
  assert.equal(login.status, 200, login.text);
  assert.deepEqual(rowsOf(login.headers['x-request-id']).map((r) => [r.org, r.actor, r.action, r.resource]),
    [['-', ADMIN, 'user.token_created', ADMIN]]);
  // The deprecated alias re-dispatches to /auth: still one row.
  const alias = await hub.request('POST', '/api/users/login', { body: { email: ADMIN, password: 'correct horse battery' } });
  assert.equal(alias.status, 200, alias.text);
  assert.equal(rowsOf(alias.headers['x-request-id']).length, 1);

  await mutation('POST', '/api/orgs', { name: 'bravo' }, { action: 'org.created', resource: 'bravo', org: 'bravo' });
  await mutation('POST', '/api/orgs/acme/users', { email: 'eve@example.com', role: 'manage', password: 'a long enough password' },
    { action: 'member.created', resource: 'eve@example.com' });
  await mutation('PUT', '/api/orgs/acme/users/eve@example.com', { role: 'view' },
    { action: 'member.updated', resource: 'eve@example.com', resourceType: 'member' });

  // Products and keys.
  await mutation('POST', '/api/orgs/acme/products', { name: 'demo' }, { action: 'product.created', resource: 'demo' });
  await mutation('POST', '/api/orgs/acme/products', { name: 'scratch' }, { action: 'product.created', resource: 'scratch' });
  await mutation('PUT', '/api/orgs/acme/products/scratch', { name: 'scratch2' },
    { action: 'product.updated', resource: 'scratch', resourceType: 'product' });
  const key = fs.readFileSync(path.join(fixtures, 'signing.pub'), 'utf8').trim();
  await mutation('POST', '/api/orgs/acme/keys', { name: 'release', key }, { action: 'key.created', resource: 'release' });

  // Firmware upload (a spooled body) and deployments.
  const upload = await mutation('POST', `${PRODUCT}/firmwares`, undefined,
    { action: 'firmware.created', resource: (res) => res.body.data.uuid, resourceType: 'firmware' },
    { request: { raw: fs.readFileSync(path.join(fixtures, 'demo-1.0.0.fw')), headers: { 'content-type': 'application/octet-stream' } } });
  const { uuid } = upload.body.data;
  assert.match(uuid, /^[0-9a-f-]{36}$/);
  await mutation('POST', `${PRODUCT}/deployments`, { name: 'stable', firmware: uuid, conditions: { version: '', tags: [] } },
    { action: 'deployment.created', resource: 'stable' });
  await mutation('PUT', `${PRODUCT}/deployments/stable`, { state: 'on' }, { action: 'deployment.updated', resource: 'stable' });
  // A read-only POST leaves nothing.
  const preview = await hub.request('POST', `${PRODUCT}/deployments/preview`,
    { token, body: { name: 'p', firmware: uuid, conditions: { version: '', tags: [] } } });
  assert.ok(preview.status < 500, preview.text);
  assert.equal(rowsOf(preview.headers['x-request-id']).length, 0, 'a deployment preview is not a mutation');

  // Devices, device actions (the handler's own row), CAs and certificates.
  await mutation('POST', `${PRODUCT}/devices`, { identifier: 'd-1', tags: ['a'] }, { action: 'device.created', resource: 'd-1' });
  await mutation('PUT', `${PRODUCT}/devices/d-1`, { description: 'first' }, { action: 'device.updated', resource: 'd-1' });
  await mutation('POST', `${PRODUCT}/devices/d-1/upgrade`, { uuid }, { action: 'device.upgrade', resource: 'd-1' });
  await mutation('DELETE', `${PRODUCT}/devices/d-1/penalty`, undefined, { action: 'device.penalty_cleared', resource: 'd-1' });
  const ca = await mutation('POST', '/api/orgs/acme/ca_certificates/managed', { description: 'audit CA' },
    { action: 'ca_certificate.managed_created' });
  const created = await mutation('POST', `${PRODUCT}/devices/d-1/certificates/create`, undefined,
    { action: 'device.certificate.created', resource: 'd-1' });
  await mutation('DELETE', `${PRODUCT}/devices/d-1/certificates/${created.body.data.serial}`, undefined,
    { action: 'device.certificate.deleted', resource: 'd-1', resourceType: 'device' });
  await mutation('PUT', `/api/orgs/acme/ca_certificates/${ca.body.data.serial}`, { description: 'renamed' },
    { action: 'ca_certificate.updated', resource: ca.body.data.serial });

  // Deletions.
  await mutation('DELETE', `${PRODUCT}/deployments/stable`, undefined, { action: 'deployment.deleted', resource: 'stable' });
  await mutation('DELETE', `${PRODUCT}/devices/d-1`, undefined, { action: 'device.deleted', resource: 'd-1' });
  await mutation('DELETE', `${PRODUCT}/firmwares/${uuid}`, undefined, { action: 'firmware.deleted', resource: uuid });
  await mutation('DELETE', '/api/orgs/acme/keys/release', undefined, { action: 'key.deleted', resource: 'release' });
  await mutation('DELETE', '/api/orgs/acme/products/scratch2', undefined, { action: 'product.deleted', resource: 'scratch2' });
  await mutation('DELETE', '/api/orgs/acme/users/eve@example.com', undefined, { action: 'member.deleted', resource: 'eve@example.com' });
  await mutation('DELETE', `/api/orgs/acme/ca_certificates/${ca.body.data.serial}`, undefined,
    { action: 'ca_certificate.deleted', resource: ca.body.data.serial });
});

test('walking the documented mutations: a 2xx answer has exactly one row, a refusal none', async () => {
  const contract = loadContract();
  const routes = contract.routes.filter((r) => MUTATIONS.includes(r.method) && r.template.startsWith('/api/'));
  assert.ok(routes.length >= 30, `documented mutating routes: ${routes.length}`);
  let successes = 0;
  let refusals = 0;
  for (const route of routes) {
    // Unknown names everywhere but the org: nothing existing is changed, most answers are 404/422.
    const url = route.template.replace(/\{([^}]+)\}/g, (_, name) => (name === 'org' ? 'acme' : 'no-such-thing'));
    for (const who of [undefined, token]) {
      const res = await hub.request(route.method, url, { token: who, body: {} });
      const rows = rowsOf(res.headers['x-request-id']);
      if (res.status >= 200 && res.status < 300) {
        successes += 1;
        assert.equal(rows.length, 1, `${route.method} ${route.template} → ${res.status}: ${JSON.stringify(rows)}`);
        assert.equal(rows[0].actor, who ? ADMIN : rows[0].actor);
      } else {
        refusals += 1;
        assert.equal(rows.length, 0, `${route.method} ${route.template} → ${res.status} must leave no row`);
      }
    }
  }
  assert.ok(refusals > routes.length, `refusals ${refusals}`);
  assert.ok(successes >= 1, 'some documented mutations succeed with an empty body (e.g. a managed CA)');
});

test('GET audit_logs: filters by action, actor, target, since/until; pages with before/limit', async () => {
  const list = async (query) => {
    const res = await hub.request('GET', `/api/orgs/acme/audit_logs${query}`, { token });
    assert.equal(res.status, 200, res.text);
    return res;
  };
  const products = (await list('?action=product.created')).body.data;
  assert.deepEqual(products.map((e) => e.resource).sort(), ['demo', 'scratch']);
  for (const e of products) {
    assert.equal(e.actor, ADMIN);
    assert.match(e.request_id, /^[0-9a-f]{16}$/);
    assert.equal(e.details.route, '/api/orgs/:org/products');
  }
  assert.deepEqual((await list('?target=d-1&action=device.upgrade')).body.data.map((e) => e.request_id),
    [done.get('device.upgrade')]);
  const byTarget = (await list('?target=d-1')).body.data.map((e) => e.action);
  for (const action of ['device.created', 'device.updated', 'device.upgrade', 'device.certificate.created',
    'device.certificate.deleted', 'device.deleted']) {
    assert.ok(byTarget.includes(action), `${action} in ${byTarget}`);
  }
  assert.equal((await list('?actor=nobody@example.com')).body.data.length, 0);
  const all = (await list('?limit=500')).body.data;
  assert.ok(all.length >= 25, `rows: ${all.length}`);
  assert.ok(all.every((e) => e.actor === ADMIN || e.actor === 'anonymous'), 'all by the admin');
  assert.equal((await list(`?since=${encodeURIComponent(startedAt)}&limit=500`)).body.data.length, all.length);
  assert.equal((await list('?since=2999-01-01')).body.data.length, 0);
  assert.equal((await list('?until=2000-01-01T00:00:00Z')).body.data.length, 0);
  assert.equal((await list('?until=2999-01-01T00:00:00%2B02:00&limit=500')).body.data.length, all.length);

  // Pages: newest first, no overlap, the next page named by x-next-before.
  const first = await list('?limit=3');
  assert.equal(first.body.data.length, 3);
  const cursor = first.headers['x-next-before'];
  assert.equal(cursor, String(first.body.data[2].id));
  const second = await list(`?limit=3&before=${cursor}`);
  assert.ok(second.body.data.every((e) => e.id < Number(cursor)));
  assert.deepEqual([...first.body.data, ...second.body.data].map((e) => e.id), all.slice(0, 6).map((e) => e.id));
  const last = await list(`?limit=500&before=${all[all.length - 1].id}`);
  assert.equal(last.body.data.length, 0);
  assert.equal(last.headers['x-next-before'], undefined);

  for (const bad of ['?since=yesterday', '?until=2026-13', '?limit=0', '?before=x', "?since=2026-01-01'--",
    '?since=2026-02-31', '?until=2026-01-01T24:00:00Z', '?since=2026-01-01T10:00:00%2B99:00', '?since=0000-01-01']) {
    assert.equal((await hub.request('GET', `/api/orgs/acme/audit_logs${bad}`, { token })).status, 400, bad);
  }
  // The org's log is its own: bravo only has its creation.
  const bravo = await hub.request('GET', '/api/orgs/bravo/audit_logs', { token });
  assert.deepEqual(bravo.body.data.map((e) => e.action), ['org.created']);
});
