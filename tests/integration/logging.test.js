'use strict';
// Log lines written while an admin API request is handled carry its request id (the
// x-request-id response header): as `request_id=…` in plain logs, as a field in JSON logs.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { startDeviceFixture, eventually } = require('../e2e/lib/device_fixture');

/** Registers a fresh CA for acme; returns the x-request-id of the registration request. */
async function registerCa(f, name) {
  const ca = f.pki.root(name);
  const tokenRes = await f.api('GET', '/api/orgs/acme/ca_certificates/verification_token');
  assert.equal(tokenRes.status, 200);
  const verification = ca.issueVerification(tokenRes.body.data.verification_token);
  const res = await f.api('POST', '/api/orgs/acme/ca_certificates',
    { cert: ca.base64, verification_cert: verification.base64, description: name });
  assert.equal(res.status, 201, res.text);
  const id = res.headers['x-request-id'];
  assert.match(id, /^[0-9a-f]{16}$/);
  return id;
}

test('plain logs: a line written during a request starts with request_id=<x-request-id>', async () => {
  const f = await startDeviceFixture();
  try {
    const first = await registerCa(f, 'Logging Root A');
    const second = await registerCa(f, 'Logging Root B');
    assert.notEqual(first, second);
    for (const id of [first, second]) {
      const line = await eventually(async () =>
        f.hub.log().split('\n').find((l) => l.includes(`request_id=${id} `)) || null,
      `a log line with request_id=${id}`);
      assert.match(line, new RegExp(`^\\S+Z info  request_id=${id} org=acme registered CA serial=`));
    }
    // Lines outside any request carry no request id.
    const startup = f.hub.log().split('\n').find((l) => / otahubd node=/.test(l));
    assert.ok(startup, 'the start-up line is there');
    assert.doesNotMatch(startup, /request_id=/);
  } finally {
    await f.hub.stop();
  }
});

test('JSON logs: the request id is a field of its own; every line is valid JSON', async () => {
  const f = await startDeviceFixture({ env: { OTAHUB_LOG_JSON: 'true' } });
  try {
    const id = await registerCa(f, 'Logging Root JSON');
    const entry = await eventually(async () => {
      const lines = f.hub.log().split('\n').filter((l) => l.trim() !== '');
      const parsed = lines.map((l) => {
        try {
          return JSON.parse(l);
        } catch (e) {
          assert.fail(`not JSON: ${l}`);
        }
        return null;
      });
      return parsed.find((e) => e.request_id === id) || null;
    }, `a JSON line with request_id ${id}`);
    assert.equal(entry.level, 'info');
    assert.match(entry.msg, /^org=acme registered CA serial=/);
    assert.doesNotMatch(entry.msg, /request_id/);
  } finally {
    await f.hub.stop();
  }
});
