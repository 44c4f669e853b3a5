'use strict';
// Boundary fuzzing of the admin API's request bodies (issue 5, "Admin API"), generated from
// proto/openapi.yaml: for every operation with a JSON request body, a plausible body is built
// from the schema (examples, defaults, enums, types), then every property is replaced in turn by
// boundary and wrong-typed values (null, wrong JSON types, empty and 100,000-character strings,
// a lone surrogate, 0, -1, 2^31, 2^63, 1e308, 1.5, huge and nested arrays and objects), and the
// whole body by malformed ones (not JSON, an array, a scalar, `{}`, unknown fields, 10,000 levels
// of nesting, one byte over the body limit). Every answer must be below 500, and every refusal a
// JSON error envelope. The requests run as the org admin against real fixtures (an org with a
// product, a device, a firmware, a deployment, a signing key, a managed CA and a user), rebuilt as
// a new org whenever a fuzzed request changed one of them, so every operation reaches its handler.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const YAML = require('yaml');
const { startHub } = require('../e2e/lib/hub');

const SPEC = YAML.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'proto', 'openapi.yaml'), 'utf8'));
const FIXTURES = path.join(__dirname, '..', 'fixtures', 'fwup');
const BODY_LIMIT = 1024 * 1024;  // OTAHUB_API_BODY_LIMIT default

let hub;
let token;
let fixtures;
let generation = 0;
const stats = { requests: 0, accepted: 0, refused: 0, byStatus: {} };

function resolve(node, seen = new Set()) {
  if (!node || typeof node !== 'object') return node;
  if (node.$ref) {
    if (seen.has(node.$ref)) return {};
    const target = node.$ref.replace(/^#\//, '').split('/').reduce((o, k) => o[k], SPEC);
    return resolve(target, new Set([...seen, node.$ref]));
  }
  return node;
}

/** Flattens a schema: {type, properties, required, example…}, merging allOf and the first anyOf/oneOf. */
function flatten(schema, seen = new Set()) {
  const s = resolve(schema, seen);
  if (!s || typeof s !== 'object') return {};
  const out = { ...s, properties: { ...(s.properties || {}) }, required: [...(s.required || [])] };
  for (const part of [...(s.allOf || []), ...((s.anyOf || s.oneOf || []).slice(0, 1))]) {
    const f = flatten(part, seen);
    Object.assign(out.properties, f.properties);
    out.required.push(...f.required);
    if (!out.type && f.type) out.type = f.type;
  }
  return out;
}

function typeOf(schema) {
  const s = flatten(schema);
  const t = Array.isArray(s.type) ? s.type.find((x) => x !== 'null') : s.type;
  if (t) return t;
  if (Object.keys(s.properties).length) return 'object';
  return 'string';
}

/** A plausible value for `schema`. */
function sample(schema, name = '', depth = 0) {
  const s = flatten(schema);
  if (s.example !== undefined) return s.example;
  if (Array.isArray(s.examples) && s.examples.length) return s.examples[0];
  if (s.default !== undefined) return s.default;
  if (Array.isArray(s.enum) && s.enum.length) return s.enum.find((v) => v !== null) ?? s.enum[0];
  if (s.const !== undefined) return s.const;
  switch (typeOf(schema)) {
    case 'integer': return 1;
    case 'number': return 1;
    case 'boolean': return false;
    case 'array': return depth > 3 ? [] : [sample(s.items || {}, name, depth + 1)];
    case 'object': {
      const obj = {};
      if (depth > 3) return obj;
      for (const key of new Set(s.required)) {
        if (s.properties[key]) obj[key] = sample(s.properties[key], key, depth + 1);
      }
      return obj;
    }
    default:
      return `fuzz-${name || 'value'}`;
  }
}

/** Boundary and wrong-typed replacements for a property of `schema`. Values are JSON texts. */
function mutations(schema) {
  const t = typeOf(schema);
  const big = JSON.stringify('x'.repeat(100000));
  const common = ['null', '{}', '[]', '"\\ud800"', '""'];
  switch (t) {
    case 'integer':
    case 'number':
      return [...common, '"12"', '0', '-1', '1.5', '2147483648', '9223372036854775808', '-9223372036854775809', '1e308', '-1e308', 'true'];
    case 'boolean':
      return [...common, '"true"', '1', '0'];
    case 'array':
      return [...common, '"x"', '[null]', '[1, "a", {}, []]', JSON.stringify(Array(20000).fill('a')), '[[[[[[[[[[]]]]]]]]]]'];
    case 'object':
      return [...common, '"x"', '1', '{"unknown_field": 1}', JSON.stringify(Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`k${i}`, i])))];
    default:
      return [...common, '12345', 'true', big, '" "', '"\\u0000"', '"../../etc/passwd"', '"\\u202e\\u2028"'];
  }
}

/** Whole-body replacements (raw texts). */
function bodyMutations(base) {
  const deep = '['.repeat(10000) + ']'.repeat(10000);
  return [
    ['not JSON', '{'],
    ['a JSON array', '[]'],
    ['a JSON string', '"x"'],
    ['JSON null', 'null'],
    ['an empty object', '{}'],
    ['unknown fields', JSON.stringify({ ...base, unknown_field: 'x', __proto__x: {} })],
    ['10,000 levels of nesting', deep],
    ['one byte over the body limit', JSON.stringify({ pad: 'x'.repeat(BODY_LIMIT) })],
    ['an empty body', ''],
    ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0x6e, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d])],
  ];
}

/** Operations with a JSON request body: [{method, template, schema}]. */
function jsonOperations() {
  const ops = [];
  for (const [template, item] of Object.entries(SPEC.paths)) {
    for (const method of ['post', 'put', 'patch']) {
      const op = item[method];
      if (!op || !op.requestBody) continue;
      const body = resolve(op.requestBody);
      const json = body.content && body.content['application/json'];
      if (!json || !json.schema) continue;
      ops.push({ method: method.toUpperCase(), template, schema: json.schema });
    }
  }
  return ops;
}

async function must(method, url, body, status, raw) {
  const res = await hub.request(method, url, raw ? { token, raw, headers: { 'content-type': 'application/octet-stream' } } : { token, body });
  if (res.status !== status) throw new Error(`${method} ${url}: ${res.status} ${res.text}`);
  return res.body && res.body.data;
}

/** Creates an org with a signing key, product `demo` (the fixtures' firmware is for `demo`), a
 * device, the firmware, a deployment, a user and a managed CA. */
async function makeFixtures() {
  generation += 1;
  const g = generation;
  const org = `fuzz-org-${g}`;
  await must('POST', '/api/orgs', { name: org }, 201);
  const key = fs.readFileSync(path.join(FIXTURES, 'signing.pub'), 'utf8').trim();
  await must('POST', `/api/orgs/${org}/keys`, { name: 'release', key }, 201);
  await must('POST', `/api/orgs/${org}/products`, { name: 'demo' }, 201);
  const base = `/api/orgs/${org}/products/demo`;
  await must('POST', `${base}/devices`, { identifier: `fuzz-device-${g}`, tags: ['fuzz'] }, 201);
  const fw = await must('POST', `${base}/firmwares`, null, 201, fs.readFileSync(path.join(FIXTURES, 'demo-1.0.0.fw')));
  await must('POST', `${base}/deployments`, {
    name: `fuzz-deployment-${g}`, firmware: fw.uuid, conditions: { version: '< 1.0.0', tags: ['fuzz'] },
  }, 201);
  await must('POST', `/api/orgs/${org}/users`, { email: `fuzz-${g}@example.com`, role: 'view', password: 'a long enough password' }, 201);
  const ca = await must('POST', `/api/orgs/${org}/ca_certificates/managed`, { description: `fuzz CA ${g}` }, 201);
  return {
    org, product: 'demo', identifier: `fuzz-device-${g}`, uuid: fw.uuid, email: `fuzz-${g}@example.com`,
    serial: ca.serial, deployment: `fuzz-deployment-${g}`, key: 'release',
  };
}

function urlFor(template) {
  return template.replace(/\{(\w+)\}/g, (_, name) => {
    if (name === 'name') return encodeURIComponent(template.includes('/keys/') ? fixtures.key : fixtures.deployment);
    if (!(name in fixtures)) throw new Error(`no fixture for path parameter {${name}} in ${template}`);
    return encodeURIComponent(fixtures[name]);
  });
}

async function send(method, url, raw, label) {
  const res = await hub.request(method, url, {
    token, raw: typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw, headers: { 'content-type': 'application/json' },
  });
  stats.requests += 1;
  stats.byStatus[res.status] = (stats.byStatus[res.status] || 0) + 1;
  assert.ok(res.status < 500, `${label}: ${method} ${url} → ${res.status} ${String(res.text).slice(0, 300)}`);
  if (res.status >= 400) {
    stats.refused += 1;
    assert.ok(res.body && typeof res.body === 'object' && res.body.errors,
      `${label}: ${method} ${url} → ${res.status} without a JSON error envelope: ${String(res.text).slice(0, 300)}`);
  } else {
    stats.accepted += 1;
    if (method !== 'GET') fixtures = await makeFixtures();  // something may have been renamed or removed
  }
  return res;
}

before(async () => {
  hub = await startHub();
  token = await hub.login();
  fixtures = await makeFixtures();
});

after(async () => {
  if (hub) await hub.stop();
});

const OPERATIONS = jsonOperations();

test('the spec has JSON request bodies to fuzz', () => {
  assert.ok(OPERATIONS.length >= 20, `${OPERATIONS.length} operations with a JSON body`);
});

for (const op of OPERATIONS) {
  test(`${op.method} ${op.template}: boundary and wrong-typed bodies never get a 5xx`, async () => {
    const schema = flatten(op.schema);
    const base = sample(op.schema);
    for (const [what, raw] of bodyMutations(base)) {
      await send(op.method, urlFor(op.template), raw, `body: ${what}`);
    }
    for (const [prop, propSchema] of Object.entries(schema.properties)) {
      for (const value of mutations(propSchema)) {
        const text = JSON.stringify({ ...base, [prop]: '\u0000PLACEHOLDER\u0000' })
          .replace('"\\u0000PLACEHOLDER\\u0000"', value);
        await send(op.method, urlFor(op.template), text, `${prop} = ${value.slice(0, 40)}`);
      }
      // Without the property (required ones must be refused, optional ones may be accepted).
      const without = { ...base };
      delete without[prop];
      await send(op.method, urlFor(op.template), JSON.stringify(without), `without ${prop}`);
    }
  });
}

test('afterwards the hub serves and the fixtures are readable', async (t) => {
  const res = await hub.request('GET', `/api/orgs/${fixtures.org}/products/demo/devices`, { token });
  assert.equal(res.status, 200, res.text);
  t.diagnostic(`${stats.requests} fuzzed requests: ${stats.refused} refused (4xx), ${stats.accepted} accepted; ` +
    `statuses ${JSON.stringify(stats.byStatus)}; fixtures rebuilt ${generation - 1} times`);
  assert.ok(stats.refused > stats.requests / 2, 'most fuzzed bodies are refused');
});
