'use strict';
// Which OpenSSL code decodes EC certificate keys (OTAHUB_OPENSSL_EC_KEYS, issue 8): by default the
// hub routes them through OpenSSL's built-in EC method (OpenSSL 3.0's provider decoders cost
// ~130 µs per certificate); "provider" leaves OpenSSL's default. Either way a never-seen device is
// provisioned and joins, a registered one reconnects, and an unknown CA is refused. The rest of
// the suite (resumption, revocation, CRLs, TLS policy) runs with the default.
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { startDeviceFixture } = require('../e2e/lib/device_fixture');

const fixtures = [];

after(async () => {
  for (const f of fixtures) {
    await f.hub.stop();
    f.pki.cleanup();
  }
});

function sample(text, name, labels) {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? null : Number(line.slice(line.lastIndexOf(' ') + 1));
}

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

test('default: EC certificate keys go through the built-in method, devices are served', async () => {
  const f = await startDeviceFixture({ env: {} });
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
