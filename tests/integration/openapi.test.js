'use strict';
// The OpenAPI description: proto/openapi.yaml is what proto/src/*.yaml assemble to, it lints
// without errors, the assembler refuses conflicting fragments, and the contract helper
// (tests/e2e/lib/contract.js) catches responses that break the contract. The last test checks
// real answers of the deployment and device-action routes (and the device `update` push against
// proto/device/update_push.json) on a hub with a connected device.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { createRequire } = require('node:module');

const REPO = path.resolve(__dirname, '..', '..');
const E2E = path.join(REPO, 'tests', 'e2e');
const BUILD = path.join(REPO, 'proto', 'build-openapi.js');
const SPEC = path.join(REPO, 'proto', 'openapi.yaml');
const requireE2e = createRequire(path.join(E2E, 'package.json'));
const { Contract, ContractError } = require(path.join(E2E, 'lib', 'contract.js'));

function runBuild(args) {
  const r = spawnSync(process.execPath, [BUILD, ...args], { cwd: REPO, encoding: 'utf8' });
  return { code: r.status, out: r.stdout + r.stderr };
}

test('proto/openapi.yaml is up to date with proto/src (build-openapi.js --check)', () => {
  const r = runBuild(['--check']);
  assert.equal(r.code, 0, `${r.out}\nRegenerate with: node proto/build-openapi.js`);
  assert.match(r.out, /up to date/);
});

test('proto/openapi.yaml lints without errors (redocly, proto/redocly.yaml)', (t) => {
  const cli = path.join(path.dirname(requireE2e.resolve('@redocly/cli/package.json')), 'bin', 'cli.js');
  const r = spawnSync(process.execPath,
    [cli, 'lint', '--config', path.join(REPO, 'proto', 'redocly.yaml'), '--format=json', SPEC], {
      cwd: REPO,
      encoding: 'utf8',
      env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' },
      timeout: 120000,
    });
  let report;
  try {
    report = JSON.parse(r.stdout);
  } catch (_) {
    assert.fail(`redocly printed no JSON report (exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
  }
  const lines = report.problems.map((p) => {
    const where = (p.location && p.location[0] && p.location[0].pointer) || '';
    return `${p.severity} ${p.ruleId} ${where}: ${p.message}`;
  });
  for (const line of lines) t.diagnostic(line);
  const errors = lines.filter((l) => l.startsWith('error'));
  assert.equal(report.totals.errors, 0, `lint errors:\n${errors.join('\n')}`);
  assert.equal(r.status, 0, r.stderr);
});

test('every operation has an operationId, a summary, tags and only 3-digit statuses', () => {
  const c = new Contract(SPEC);
  assert.ok(c.routes.length >= 18, `only ${c.routes.length} routes documented`);
  for (const r of c.routes) {
    const label = `${r.method} ${r.template}`;
    assert.ok(r.operation.operationId, `${label}: operationId`);
    assert.ok(r.operation.summary, `${label}: summary`);
    assert.ok((r.operation.tags || []).length > 0, `${label}: tags`);
    for (const status of Object.keys(r.operation.responses)) {
      assert.match(status, /^[1-5]\d\d$/, `${label}: status ${status}`);
    }
  }
});

// Writes fragments into a temporary proto/src-like directory and runs the assembler on them.
function withFragments(files, fn) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'otahub-openapi-'));
  try {
    const src = path.join(dir, 'src');
    fs.mkdirSync(src);
    fs.copyFileSync(path.join(REPO, 'proto', 'src', 'common.yaml'), path.join(src, 'common.yaml'));
    for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(src, name), text);
    const out = path.join(dir, 'openapi.yaml');
    return fn({ src, out, build: (extra = []) => runBuild(['--src', src, '--out', out, ...extra]) });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const op = (id, schemaRef = '#/components/schemas/Error') => `
      operationId: ${id}
      summary: ${id}
      tags: [t]
      responses:
        '200':
          description: ok
          content:
            application/json:
              schema:
                $ref: '${schemaRef}'
`;

test('assembler merges fragments deterministically; --check detects a stale file', () => {
  withFragments({
    'b.yaml': `paths:\n  /b:\n    post:${op('postB', '#/components/schemas/Thing')}` +
      'components:\n  schemas:\n    Thing:\n      type: object\n',
    'a.yaml': `paths:\n  /b:\n    get:${op('getB')}  /a:\n    get:${op('getA', '#/components/schemas/Thing')}` +
      'components:\n  schemas:\n    Thing:\n      type: object\n',
  }, ({ out, build }) => {
    const first = build();
    assert.equal(first.code, 0, first.out);
    const text = fs.readFileSync(out, 'utf8');
    assert.match(text, /^# GENERATED FILE - do not edit/);
    assert.ok(text.indexOf('/a:') < text.indexOf('/b:'), 'paths sorted');
    assert.ok(text.indexOf('    get:', text.indexOf('/b:')) < text.indexOf('    post:', text.indexOf('/b:')),
      'methods in a fixed order');
    assert.match(text, /name: t\n/, 'undeclared tag added to the tag list');
    assert.equal(build(['--check']).code, 0);
    assert.equal(build().code, 0);
    assert.equal(fs.readFileSync(out, 'utf8'), text, 'same input, same output');
    fs.appendFileSync(out, '# hand edit\n');
    const stale = build(['--check']);
    assert.equal(stale.code, 1);
    assert.match(stale.out, /stale/);
  });
});

test('assembler refuses a path + method defined twice', () => {
  withFragments({
    'a.yaml': `paths:\n  /x:\n    get:${op('one')}`,
    'b.yaml': `paths:\n  /x:\n    get:${op('two')}`,
  }, ({ out, build }) => {
    const r = build();
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /b\.yaml: GET \/x is already defined in .*a\.yaml/);
    assert.equal(fs.existsSync(out), false, 'nothing written');
  });
});

test('assembler refuses one schema name with two definitions, and duplicate operationIds', () => {
  withFragments({
    'a.yaml': `paths:\n  /x:\n    get:${op('same')}components:\n  schemas:\n    Thing:\n      type: object\n`,
    'b.yaml': `paths:\n  /y:\n    get:${op('same')}components:\n  schemas:\n    Thing:\n      type: string\n`,
  }, ({ build }) => {
    const r = build();
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /b\.yaml: components\.schemas\.Thing conflicts with the definition in .*a\.yaml/);
    assert.match(r.out, /operationId 'same' of GET \/y is already used/);
  });
});

test('assembler refuses unresolved references and unknown top-level keys, naming the fragment', () => {
  withFragments({
    'a.yaml': `info:\n  title: x\npaths:\n  /x:\n    get:${op('x', '#/components/responses/Nope')}`,
  }, ({ build }) => {
    const r = build();
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /a\.yaml: top-level 'info' is not allowed/);
    assert.match(r.out, /a\.yaml: .*unresolved \$ref '#\/components\/responses\/Nope' \(components\.responses: BadRequest/);
  });
});

test('contract helper: documented responses pass; undocumented status, shape or route throw', () => {
  const c = new Contract(SPEC);
  const h = { 'x-request-id': '0123456789abcdef', 'content-type': 'application/json' };
  const product = { name: 'gw', inserted_at: '2026-01-31T12:00:00Z', updated_at: '2026-01-31T12:00:00Z' };
  c.checkResponse('GET', '/api/orgs/acme/products/g%20w', 200, h, { data: product });
  c.checkResponse('GET', '/api/orgs/{org}/products/{product}', 404, h, { errors: { detail: 'no' } });
  c.checkResponse('DELETE', '/api/orgs/acme/products/gw', 204, { 'x-request-id': 'aaaaaaaaaaaaaaaa' }, null, { text: '' });
  const bad = [
    [() => c.checkResponse('GET', '/api/orgs/acme/products/gw', 500, h, { errors: { detail: 'x' } }),
      /status 500 is not documented for GET \/api\/orgs\/\{org\}\/products\/\{product\}/],
    [() => c.checkResponse('GET', '/api/orgs/acme/products/gw', 200, h, { data: { ...product, extra: 1 } }),
      /\/data must NOT have additional properties/],
    [() => c.checkResponse('GET', '/api/orgs/acme/products/gw', 200, h, { data: { ...product, inserted_at: 'yesterday' } }),
      /\/data\/inserted_at must match format "date-time"/],
    [() => c.checkResponse('GET', '/api/orgs/acme/products/gw', 404, h, { errors: { detail: 'x', name: 'bad' } }),
      /\/errors\/name must be array/],
    [() => c.checkResponse('POST', '/api/orgs/acme/products/gw', 404, h, { errors: { detail: 'x' } }),
      /no documented route for this method \(documented: GET, PUT, DELETE, PATCH\)/],
    [() => c.checkResponse('GET', '/api/nothing', 404, h, { errors: { detail: 'x' } }), /no documented route/],
    [() => c.checkResponse('GET', '/api/orgs/acme', 404, {}, { errors: { detail: 'x' } }), /x-request-id/],
    [() => c.checkResponse('DELETE', '/api/orgs/acme/products/gw', 204, h, { data: 1 }), /without a body/],
    [() => c.checkResponse('GET', '/api/users/me', 200, h, null, { text: '<html>' }), /not JSON/],
  ];
  for (const [fn, message] of bad) assert.throws(fn, (e) => e instanceof ContractError && message.test(e.message));
  const cov = c.coverage({ tags: ['products'] });
  assert.deepEqual(cov.filter((r) => r.exercised).map((r) => `${r.method} ${r.path} ${r.statuses}`),
    ['GET /api/orgs/{org}/products/{product} 200,404', 'DELETE /api/orgs/{org}/products/{product} 204']);
  assert.match(c.coverageReport({ tags: ['products'] }), /2\/6 documented routes exercised/);
});

test('real deployment and device-action answers match the spec; the update push matches update_push.json', async (t) => {
  const { startHub } = require(path.join(E2E, 'lib', 'hub.js'));
  const { contractClient } = require(path.join(E2E, 'lib', 'contract.js'));
  const { TestPki } = require(path.join(E2E, 'lib', 'pki.js'));
  const { DeviceFixture, eventually } = require(path.join(E2E, 'lib', 'device_fixture.js'));
  const { nervesHubLinkJoinPayload } = require(path.join(E2E, 'lib', 'device_client.js'));
  const Ajv2020 = requireE2e('ajv/dist/2020');
  const addFormats = requireE2e('ajv-formats');
  const ajv = new Ajv2020({ allErrors: true, strict: false });
  addFormats(ajv);
  const validatePush = ajv.compile(JSON.parse(fs.readFileSync(
    path.join(REPO, 'proto', 'device', 'update_push.json'), 'utf8')));
  const checkPush = (payload) => {
    assert.ok(validatePush(payload), `update push vs update_push.json: ${ajv.errorsText(validatePush.errors)}`);
    // The server always sends every documented field.
    assert.deepEqual(Object.keys(payload).sort(), ['checksum', 'deployment_id', 'firmware_meta',
      'firmware_url', 'partials_checksums', 'size', 'update_available']);
  };

  const fixtures = path.join(REPO, 'tests', 'fixtures', 'fwup');
  const expected = JSON.parse(fs.readFileSync(path.join(fixtures, 'expected.json'), 'utf8'));
  const V1 = expected['demo-1.0.0.fw'].metadata['meta-uuid'];
  const V2 = expected['demo-2.0.0.fw'].metadata['meta-uuid'];
  const V21 = expected['demo-2.1.0-rc.1.fw'].metadata['meta-uuid'];
  const base = '/api/orgs/acme/products/demo';
  const deployments = `${base}/deployments`;
  const dev = `${base}/devices/contract-1`;

  const contract = new Contract(SPEC);
  const hub = await startHub({ env: { OTAHUB_ROLLOUT_SWEEP_INTERVAL_MS: '600000' } });
  const pki = new TestPki();
  let device;
  try {
    const api = contractClient(hub, contract);
    const token = await hub.login();
    await api.expect(201, 'POST', '/api/orgs/acme/products', { token, body: { name: 'demo' } });
    const key = fs.readFileSync(path.join(fixtures, 'signing.pub'), 'utf8').trim();
    await api.expect(201, 'POST', '/api/orgs/acme/keys', { token, body: { name: 'release', key } });
    for (const file of ['demo-1.0.0.fw', 'demo-2.0.0.fw', 'demo-2.1.0-rc.1.fw']) {
      await api.expect(201, 'POST', `${base}/firmwares`, {
        token, raw: fs.readFileSync(path.join(fixtures, file)),
        headers: { 'content-type': 'application/octet-stream' },
      });
    }
    const fx = new DeviceFixture(hub, token, pki);
    const ca = pki.root('Contract CA');
    await fx.registerCa(ca, { jitp: { product_name: 'demo', tags: ['contract'], description: 'contract' } });
    device = await fx.connect(ca.issueLeaf({ cn: 'contract-1' }), {
      joinPayload: nervesHubLinkJoinPayload({ uuid: V1, version: '1.0.0', product: 'demo' }),
    });
    await eventually(async () => (await fx.device('contract-1', 'demo'))?.online, 'contract-1 online');

    // An inactive deployment: created, listed, read; it matches nobody yet.
    const created = await api.expect(201, 'POST', deployments, {
      token, body: { deployment: { name: 'to-2', firmware: V2, concurrent_updates: 0,
        conditions: { version: '~> 1.0', tags: ['contract'] } } },
    });
    assert.equal(created.body.data.is_active, false);
    assert.equal(created.body.data.state, 'off');
    assert.equal(created.body.data.firmware_uuid, V2);
    assert.deepEqual(created.body.data.counts, { in_flight: 0, succeeded: 0, failed: 0 });
    await api.expect(409, 'POST', deployments, { token, body: { name: 'to-2', firmware: V2 } });
    const unknown = await api.expect(422, 'POST', deployments, {
      token, body: { name: 'x', firmware: '00000000-0000-0000-0000-000000000000' },
    });
    assert.ok(unknown.body.errors.firmware);
    const list = await api.expect(200, 'GET', deployments, { token });
    assert.deepEqual(list.body.data.map((d) => d.name), ['to-2']);
    const one = await api.expect(200, 'GET', `${deployments}/to-2`, { token });
    assert.equal(one.body.data.counts.matching_devices, 0);
    await api.expect(404, 'GET', `${deployments}/nope`, { token });

    const draft = await api.expect(200, 'POST', `${deployments}/preview`, {
      token, body: { firmware: V2, conditions: { tags: ['contract'] } },
    });
    assert.deepEqual(draft.body.data, { matching_devices: 1, eligible_devices: 1, devices_truncated: false,
      devices: [{ identifier: 'contract-1', eligible: true, reason: draft.body.data.devices[0].reason }] });
    await api.expect(422, 'POST', `${deployments}/preview`, { token, body: { name: 'no firmware' } });

    const idle = await api.expect(200, 'GET', `${dev}/resolution`, { token });
    assert.equal(idle.body.data.deployment, null);
    assert.equal(idle.body.data.eligible, false);
    assert.deepEqual(idle.body.data.deployments.map((d) => [d.deployment, d.verdict, d.exclusion, d.blocker]),
      [['to-2', 'excluded', 'inactive', null]]);

    // Switched on: the device is sent the update.
    const on = await api.expect(200, 'PATCH', `${deployments}/to-2`, { token, body: { state: 'on' } });
    assert.equal(on.body.data.is_active, true);
    const push = await device.waitForPush('update', 3000);
    checkPush(push);
    assert.equal(push.deployment_id, created.body.data.id);
    assert.equal(push.firmware_meta.uuid, V2);

    const preview = await api.expect(200, 'GET', `${deployments}/to-2/preview`, { token });
    assert.equal(preview.body.data.matching_devices, 1);
    assert.equal(preview.body.data.eligible_devices, 0, 'an update is in flight');
    const chosen = await api.expect(200, 'GET', `${dev}/resolution`, { token });
    assert.deepEqual(chosen.body.data.deployment, { name: 'to-2', firmware_uuid: V2, firmware_version: '2.0.0' });
    assert.deepEqual(chosen.body.data.deployments.map((d) => [d.verdict, d.exclusion, d.blocker]),
      [['chosen', null, 'update_in_flight']]);
    const inFlight = await api.expect(200, 'GET', `${dev}/updates`, { token });
    assert.deepEqual(inFlight.body.data.map((u) => [u.deployment, u.source, u.status]),
      [['to-2', 'deployment', 'in_flight']]);
    const counted = await api.expect(200, 'GET', `${deployments}/to-2`, { token });
    assert.equal(counted.body.data.counts.in_flight, 1);
    const renamed = await api.expect(200, 'PUT', `${deployments}/to-2`, {
      token, body: { name: 'to-2b', notes: 'contract test' },
    });
    assert.equal(renamed.body.data.notes, 'contract test');

    // Manual push: cancels the deployment's update and turns automatic updates off.
    const upgrade = await api.expect(202, 'POST', `${dev}/upgrade`, { token, body: { uuid: V21 } });
    assert.equal(upgrade.body.data.updates_enabled, false);
    assert.equal(upgrade.body.data.online, true);
    assert.equal(upgrade.body.data.update.source, 'manual');
    assert.equal(upgrade.body.data.update.firmware_uuid, V21);
    const manual = await device.waitForPush('update', 3000);
    checkPush(manual);
    assert.equal(manual.deployment_id, null);
    const bad = await api.expect(422, 'POST', `${dev}/upgrade`, {
      token, body: { upgrade: { uuid: '00000000-0000-0000-0000-000000000000' } },
    });
    assert.ok(bad.body.errors.uuid);
    const history = await api.expect(200, 'GET', `${dev}/updates`, { token });
    assert.deepEqual(history.body.data.map((u) => [u.source, u.status]),
      [['manual', 'in_flight'], ['deployment', 'cancelled']]);

    const reboot = await api.expect(200, 'POST', `${dev}/reboot`, { token });
    assert.deepEqual(reboot.body.data, { identifier: 'contract-1', sent: 'reboot' });
    await device.waitForPush('reboot', 3000);
    await api.expect(200, 'POST', `${dev}/identify`, { token });
    await device.waitForPush('identify', 3000);
    await api.expect(204, 'DELETE', `${dev}/penalty`, { token });

    await device.close();
    device = null;
    await eventually(async () => !(await fx.device('contract-1', 'demo')).online, 'contract-1 offline');
    await api.expect(409, 'POST', `${dev}/identify`, { token });
    await api.expect(409, 'POST', `${dev}/reboot`, { token });

    await api.expect(204, 'DELETE', `${deployments}/to-2b`, { token });
    await api.expect(404, 'DELETE', `${deployments}/to-2b`, { token });
    const after = await api.expect(200, 'GET', `${dev}/updates`, { token });
    assert.deepEqual(after.body.data.map((u) => [u.deployment, u.deployment_id]), [[null, null], [null, null]]);
    await api.expect(404, 'GET', `${base}/devices/nobody/resolution`, { token });
    await api.expect(404, 'GET', `${base}/devices/nobody/updates`, { token });

    // Every deployment and device-action route answered a documented success, schema-checked.
    for (const line of contract.coverageReport({ tags: ['deployments', 'device actions'] }).split('\n')) {
      t.diagnostic(line);
    }
    const missed = contract.coverage({ tags: ['deployments', 'device actions'] })
      .filter((r) => !r.statuses.some((s) => s >= 200 && s < 300))
      .map((r) => `${r.method} ${r.path} (${r.statuses.join(', ') || 'never called'})`);
    assert.deepEqual(missed, []);
  } finally {
    if (device) await device.close().catch(() => {});
    await hub.stop();
    pki.cleanup();
  }
});
