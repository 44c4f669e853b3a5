'use strict';
// The firmware TTL job running in a real hub (OTAHUB_FIRMWARE_GC_INTERVAL=1): firmware whose
// TTL runs out while nothing references it disappears with its file; firmware without a TTL,
// or with time left, stays. (Referencing and the injected clock are covered by
// tests/db/firmware_repository_test.cpp.)
const { test, before, after, describe } = require('node:test');
const assert = require('node:assert/strict');
const { startHub } = require('../e2e/lib/hub');
const fw = require('./firmware_support');

const expected = fw.expected();

async function waitFor(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('firmware TTL job', () => {
  let hub;
  let token;

  before(async () => {
    hub = await startHub({ env: { OTAHUB_FIRMWARE_GC_INTERVAL: '1' } });
    token = await fw.setupOrg(hub);
  });
  after(async () => { if (hub) await hub.stop(); });

  test('expired firmware is deleted with its file; the rest stays', async () => {
    const short = await fw.uploadMultipart(hub, token, 'demo', fw.fixture('demo-1.0.0.fw'), { ttl: 1 });
    assert.equal(short.status, 201, short.body.toString());
    assert.equal(short.json.data.ttl, 1);
    const long = await fw.uploadRaw(hub, token, 'demo', fw.fixture('demo-1.1.0.fw'), { ttl: 86400 });
    assert.equal(long.status, 201);
    const forever = await fw.uploadRaw(hub, token, 'demo', fw.fixture('demo-2.0.0.fw'));
    assert.equal(forever.status, 201);
    assert.equal(forever.json.data.ttl_until, null);

    const shortUuid = expected['demo-1.0.0.fw'].metadata['meta-uuid'];
    const base = fw.firmwaresPath('acme', 'demo');
    await waitFor(async () => (await hub.request('GET', `${base}/${shortUuid}`, { token })).status === 404,
      15000, 'the TTL job to delete the firmware');
    assert.ok(!fw.dataFiles(hub).some((f) => f.includes(shortUuid)), 'file removed');
    assert.match(hub.log(), new RegExp(`firmware ${shortUuid} of org \\d+ deleted: its TTL ran out`));

    const list = await hub.request('GET', base, { token });
    assert.deepEqual(list.body.data.map((f) => f.version).sort(), ['1.1.0', '2.0.0']);
    assert.equal(fw.dataFiles(hub).filter((f) => f.startsWith('firmware/')).length, 2);
  });
});
