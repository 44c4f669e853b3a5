'use strict';
// Which OpenSSL code decodes EC certificate keys (OTAHUB_OPENSSL_EC_KEYS, issue 8): "legacy" routes
// them through OpenSSL's built-in EC method (OpenSSL 3.0's provider decoders cost ~130 µs per
// certificate); "provider" leaves OpenSSL's default; "auto", the default, is legacy before OpenSSL
// 3.2. Either way a never-seen device is provisioned and joins, a registered one reconnects, and
// an unknown CA is refused. The rest of the suite (resumption, revocation, CRLs, TLS policy) runs
// with the default, which is legacy on Debian 12 (OpenSSL 3.0).
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { startDeviceFixture } = require('../e2e/lib/device_fixture');
const { sample } = require('../e2e/lib/metrics');

/** Whether the system OpenSSL (the one otahubd links) predates 3.2: "OpenSSL 3.0.19 27 Jan 2026". */
function opensslBefore32() {
  const [major, minor] = execFileSync('openssl', ['version'], { encoding: 'utf8' })
    .split(' ')[1].split('.').map(Number);
  return major < 3 || (major === 3 && minor < 2);
}

const fixtures = [];

after(async () => {
  for (const f of fixtures) {
    await f.hub.stop();
    f.pki.cleanup();
  }
});

async function methods(f) {
  const res = await f.hub.request('GET', '/metrics');
  assert.equal(res.status, 200);
  return {
    legacy: sample(res.text, 'otahub_openssl_ec_keys', '{method="legacy"}'),
    provider: sample(res.text, 'otahub_openssl_ec_keys', '{method="provider"}'),
  };
}

async function servesDevices(f, name) {
  const root = f.pki.root(`${name} Root`);
  await f.registerCa(root, { jitp: { product_name: 'sensor', tags: [], description: '' } });
  const leaf = root.issueLeaf({ cn: `${name}-1` });
  for (let i = 0; i < 2; i += 1) {  // provisioned on the first connection, known on the second
    const device = await f.connect(leaf);
    assert.ok((await device.ping()) >= 0);
    await device.close();
  }
  assert.equal((await f.device(`${name}-1`)).identifier, `${name}-1`);

  const stranger = f.pki.root(`${name} Stranger`).issueLeaf({ cn: `${name}-stranger` });
  const refused = await f.upgrade(stranger);
  assert.notEqual(refused.status, 101);
  assert.equal(refused.alert, 'unknown ca', refused.error);
}

test('default (auto): the built-in method before OpenSSL 3.2, the providers after; devices are served', async () => {
  const f = await startDeviceFixture({ env: {} });
  fixtures.push(f);
  const legacy = opensslBefore32();
  assert.deepEqual(await methods(f), { legacy: legacy ? 1 : 0, provider: legacy ? 0 : 1 });
  assert.match(f.hub.log(), legacy ? /EC certificate keys: OpenSSL's built-in EC method/
    : /EC certificate keys: OpenSSL's providers/);
  await servesDevices(f, 'auto');
});

test('OTAHUB_OPENSSL_EC_KEYS=legacy: the built-in method, devices are served', async () => {
  const f = await startDeviceFixture({ env: { OTAHUB_OPENSSL_EC_KEYS: 'legacy' } });
  fixtures.push(f);
  assert.deepEqual(await methods(f), { legacy: 1, provider: 0 });
  assert.match(f.hub.log(), /EC certificate keys: OpenSSL's built-in EC method/);
  await servesDevices(f, 'legacy');
});

test('OTAHUB_OPENSSL_EC_KEYS=provider: OpenSSL\'s providers decode them, devices are served the same', async () => {
  const f = await startDeviceFixture({ env: { OTAHUB_OPENSSL_EC_KEYS: 'provider' } });
  fixtures.push(f);
  assert.deepEqual(await methods(f), { legacy: 0, provider: 1 });
  assert.doesNotMatch(f.hub.log(), /EC certificate keys/);
  await servesDevices(f, 'provider');
});
