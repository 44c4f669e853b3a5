'use strict';
// The OpenAPI description: proto/openapi.yaml is what proto/src/*.yaml assemble to, it lints
// without errors, the assembler refuses conflicting fragments, and the contract helper
// (tests/e2e/lib/contract.js) catches responses that break the contract. No server needed.
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
