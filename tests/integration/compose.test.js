'use strict';
// docker-compose.yml and deploy/Dockerfile, checked statically (no Docker engine runs here): the
// file parses, every service's command is one otahubd knows, every OTAHUB_* variable is a real
// setting, published ports match the listen settings, and the image runs otahubd as non-root with a
// health check; the image installs the package of every library the binaries link, and its build stage
// every library package deploy/packages.txt names.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const YAML = require(path.join(__dirname, '..', 'e2e', 'node_modules', 'yaml'));
const { binDir } = require('../e2e/lib/hub');

const root = path.join(__dirname, '..', '..');
const compose = YAML.parse(fs.readFileSync(path.join(root, 'docker-compose.yml'), 'utf8'), { merge: true });
const dockerfile = fs.readFileSync(path.join(root, 'deploy', 'Dockerfile'), 'utf8');
// The settings otahubd reads, from its configuration source (one Setting{"OTAHUB_X", ...} each).
const configSource = fs.readFileSync(path.join(root, 'server', 'app', 'config.cpp'), 'utf8');
const settings = new Set([...configSource.matchAll(/Setting\{"(OTAHUB_[A-Z0-9_]+)"/g)].map((m) => m[1]));
settings.add('OTAHUB_DATABASE_URL');

const otahubServices = Object.entries(compose.services).filter(([, s]) => s.image === 'otahub:local');

test('the compose file has postgres, migrate, otahubd and a second node behind a profile', () => {
  assert.deepEqual(Object.keys(compose.services).sort(), ['migrate', 'otahubd', 'otahubd-2', 'postgres']);
  assert.match(compose.services.postgres.image, /^postgres:15/);
  assert.ok(compose.services.postgres.healthcheck, 'postgres has a health check');
  assert.deepEqual(compose.services['otahubd-2'].profiles, ['multinode']);
  for (const name of ['otahubd', 'otahubd-2']) {
    const deps = compose.services[name].depends_on;
    assert.equal(deps.postgres.condition, 'service_healthy');
    assert.equal(deps.migrate.condition, 'service_completed_successfully');
  }
});

test('every service command is an otahubd subcommand', () => {
  const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)[1]);
  const defaultCmd = JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)[1]);
  assert.deepEqual(entrypoint, ['otahubd']);
  const help = execFileSync(path.join(binDir(), 'otahubd'), ['--help'], { env: { PATH: process.env.PATH } }).toString();
  for (const [name, service] of otahubServices) {
    const command = service.command || defaultCmd;
    assert.ok(help.includes(command[0]), `${name}: otahubd ${command[0]} is not in otahubd --help`);
  }
  assert.deepEqual(compose.services.migrate.command, ['migrate']);
});

test('every OTAHUB_* variable is a setting otahubd reads, and the required ones are set', () => {
  for (const [name, service] of otahubServices) {
    const env = service.environment || {};
    for (const key of Object.keys(env)) {
      if (key.startsWith('OTAHUB_')) assert.ok(settings.has(key), `${name}: ${key} is not an otahubd setting`);
    }
    assert.ok(env.OTAHUB_DATABASE_URL, `${name}: database URL`);
    if (name !== 'migrate') {
      for (const key of ['OTAHUB_TLS_CERT', 'OTAHUB_TLS_KEY', 'OTAHUB_SECRET_KEY', 'OTAHUB_NODE_ID', 'OTAHUB_DATA_DIR']) {
        assert.ok(env[key], `${name}: ${key}`);
      }
    }
  }
  // Two nodes need distinct ids and the same firmware volume and secret.
  const [a, b] = [compose.services.otahubd, compose.services['otahubd-2']];
  assert.notEqual(a.environment.OTAHUB_NODE_ID, b.environment.OTAHUB_NODE_ID);
  assert.equal(a.environment.OTAHUB_SECRET_KEY, b.environment.OTAHUB_SECRET_KEY);
  assert.deepEqual(a.volumes, b.volumes);
  assert.ok(a.volumes.some((v) => v.endsWith(`:${a.environment.OTAHUB_DATA_DIR}`)), 'data dir on a volume');
});

test('published ports match the listen settings', () => {
  for (const name of ['otahubd', 'otahubd-2']) {
    const env = compose.services[name].environment;
    const apiPort = env.OTAHUB_API_LISTEN.split(':').pop();
    const devicePort = env.OTAHUB_DEVICE_LISTEN.split(':').pop();
    const published = compose.services[name].ports.map((p) => p.split(':').pop());
    assert.deepEqual(published.sort(), [apiPort, devicePort].sort(), `${name} ports`);
    assert.match(env.OTAHUB_API_LISTEN, /^0\.0\.0\.0:/, 'reachable from outside the container');
  }
});

test('the image runs otahubd as a non-root user with a health check on /healthz', () => {
  assert.match(dockerfile, /^FROM debian:bookworm/m);
  assert.match(dockerfile, /^USER otahub$/m);
  assert.match(dockerfile, /^HEALTHCHECK .*\n?.*\/healthz/m);
  // The image installs what the README's package list names for running (libpqxx, OpenSSL, ...).
  assert.match(dockerfile, /libpqxx/);
});

/** The packages one `apt-get install` line of a Dockerfile stage installs (the stage's first RUN). */
function stagePackages(stage) {
  const run = dockerfile.split(/^FROM /m)[stage].match(/apt-get install([^&]*)&&/s);
  assert.ok(run, `stage ${stage} has no apt-get install`);
  return new Set(run[1].replace(/\\\n/g, ' ').split(/\s+/).filter((w) => w && !w.startsWith('-')));
}

/** The Debian package that holds the library an executable of ours loads for `soname`. */
function packageOf(binary, soname) {
  const line = execFileSync('ldd', [binary], { encoding: 'utf8' }).split('\n')
    .find((l) => l.trim().startsWith(`${soname} =>`));
  assert.ok(line, `${binary}: ldd does not resolve ${soname}`);
  const file = line.split('=>')[1].trim().split(' ')[0];
  // Debian 12 has a merged /usr: dpkg may know the file under either prefix.
  for (const candidate of [file, fs.realpathSync(file), file.replace(/^\/lib\//, '/usr/lib/'), file.replace(/^\/usr\/lib\//, '/lib/')]) {
    try {
      return execFileSync('dpkg', ['-S', candidate], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
        .split(':')[0];
    } catch (_) { /* try the next spelling */ }
  }
  assert.fail(`${soname} (${file}) belongs to no Debian package`);
}

test('the runtime image installs the package of every library otahubd and otahub link directly', () => {
  const runtime = stagePackages(2);
  // In debian:bookworm-slim already (apt itself needs them).
  const base = new Set(['libc6', 'libgcc-s1', 'libstdc++6']);
  // The sanitizers' runtimes, when this suite runs on the ASan build; the image never builds one.
  const sanitizerRuntimes = /^lib(asan|ubsan|lsan|tsan)\d+$/;
  for (const name of ['otahubd', 'otahub']) {
    const binary = path.join(binDir(), name);
    const needed = execFileSync('readelf', ['-d', binary], { encoding: 'utf8' })
      .split('\n').map((l) => l.match(/\(NEEDED\)\s+Shared library: \[(.+)\]/)).filter(Boolean).map((m) => m[1]);
    assert.ok(needed.includes('libc.so.6'), `${name}: ${needed}`);
    for (const soname of needed) {
      const pkg = packageOf(binary, soname);
      if (sanitizerRuntimes.test(pkg)) continue;
      assert.ok(base.has(pkg) || runtime.has(pkg), `${name} needs ${soname} from ${pkg}, which the image does not install`);
    }
  }
});

test('the build stage installs every library package deploy/packages.txt names for building', () => {
  const build = stagePackages(1);
  const listed = fs.readFileSync(path.join(root, 'deploy', 'packages.txt'), 'utf8').split('\n')
    .map((l) => l.replace(/#.*/, '').trim()).filter((l) => l.endsWith('-dev'));
  // Test-only: GoogleTest and the fuzzers' runtime; the image builds without tests.
  const testOnly = new Set(['libgtest-dev', 'libclang-rt-14-dev']);
  const missing = listed.filter((p) => !testOnly.has(p) && !build.has(p));
  assert.deepEqual(missing, []);
  assert.ok(build.has('libgoogle-perftools-dev'));  // tcmalloc: otahubd's default malloc
});
