'use strict';
// Which malloc otahubd runs on (CMake option OTAHUB_MALLOC, issue 8): gperftools' tcmalloc by
// default, glibc's with OTAHUB_MALLOC=system, AddressSanitizer's in the sanitized build. The hub
// reports the one the running process has (GET /metrics, the startup line); this checks that report against the
// libraries mapped into the process and against what the build chose (OTAHUB_EXPECT_MALLOC, set
// by tests/CMakeLists.txt), and that devices are provisioned and served on it.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { startDeviceFixture } = require('../e2e/lib/device_fixture');

/** The otahub_memory_allocator sample's labels: { name, version }, or null. */
function reported(metricsText) {
  const line = metricsText.split('\n').find((l) => l.startsWith('otahub_memory_allocator{'));
  if (!line) return null;
  assert.equal(Number(line.slice(line.lastIndexOf(' ') + 1)), 1, line);
  const labels = Object.fromEntries([...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
  return { name: labels.name, version: labels.version };
}

/** A device is provisioned and served; the reported allocator matches the process and the build. */
async function checkAllocator(f) {
  const root = f.pki.root('Allocator Root');
  await f.registerCa(root, { jitp: { product_name: 'sensor', tags: [], description: '' } });
  const device = await f.connect(root.issueLeaf({ cn: 'allocator-1' }));
  assert.ok((await device.ping()) >= 0);
  await device.close();

  const res = await f.hub.request('GET', '/metrics');
  assert.equal(res.status, 200);
  const got = reported(res.text);
  assert.ok(got, 'otahub_memory_allocator is missing from /metrics');
  assert.ok(['tcmalloc', 'glibc', 'asan'].includes(got.name), `unexpected allocator ${got.name}`);
  assert.match(got.version, got.name === 'asan' ? /^libasan\.so/ : /^\d+\.\d+/);

  const maps = fs.readFileSync(`/proc/${f.hub.child.pid}/maps`, 'utf8');
  assert.equal(/libtcmalloc/.test(maps), got.name === 'tcmalloc',
    `metric says ${got.name}; tcmalloc ${/libtcmalloc/.test(maps) ? 'is' : 'is not'} mapped`);
  const expected = process.env.OTAHUB_EXPECT_MALLOC;
  if (expected) assert.equal(got.name, expected === 'system' ? 'glibc' : expected);
  if (got.name === 'asan') assert.match(maps, /libasan/);

  const startLine = f.hub.log().split('\n').find((l) => l.includes('otahubd node='));
  assert.ok(startLine, f.hub.log());
  assert.ok(startLine.includes(`allocator=${got.name} ${got.version}`), startLine);
}

test('the hub reports the malloc its process runs on, and serves devices on it', async () => {
  const f = await startDeviceFixture({ env: {} });
  try {
    await checkAllocator(f);
  } finally {
    await f.hub.stop();
    f.pki.cleanup();
  }
});
