'use strict';
// The `otahub` admin CLI, run as a real process against a real hub (TLS API, --ca), with HOME and
// XDG_CONFIG_HOME in a temporary directory: login and the 0600 config file, whoami, orgs, members,
// products, signing keys, firmware upload (streamed, progress lines) and download, --json output,
// one-line API and connection errors (exit 1) and usage errors (exit 2).
// Needs OTAHUB_TEST_DATABASE_URL and OTAHUB_BIN_DIR.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startHub, binDir, sanitizedBinary } = require('../e2e/lib/hub');

let hub;
let home;

/** Runs otahub with args; resolves {code, stdout, stderr}. Options: input (stdin), env, cwd. */
function otahub(args, { input, env = {}, cwd, homeDir = home } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(binDir(), 'otahub'), args, {
      cwd: cwd || homeDir,
      env: {
        PATH: process.env.PATH,
        HOME: homeDir,
        XDG_CONFIG_HOME: path.join(homeDir, 'xdg'),
        ASAN_OPTIONS: process.env.ASAN_OPTIONS || '',
        UBSAN_OPTIONS: process.env.UBSAN_OPTIONS || '',
        ...env,
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out = [];
    const err = [];
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    child.on('error', reject);
    // The CLI may exit without reading stdin; that is not a failure.
    child.stdin.on('error', () => {});
    child.on('close', (code) => resolve({
      code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(),
    }));
    child.stdin.end(input === undefined ? '' : input);
  });
}

/** The same, with the hub's URL and CA. */
function cli(args, options) {
  return otahub(['--url', hub.apiUrl, '--ca', hub.certs.ca, ...args], options);
}

function configPath(homeDir = home) {
  return path.join(homeDir, 'xdg', 'otahub', 'config.json');
}

/** Asserts an error run: the exit code and exactly one stderr line matching `pattern`. */
function assertOneLineError(result, code, pattern) {
  assert.equal(result.code, code, `exit code; stderr: ${result.stderr}`);
  const lines = result.stderr.split('\n');
  assert.equal(lines.length, 2, `one line on stderr, got: ${JSON.stringify(result.stderr)}`);
  assert.equal(lines[1], '');
  assert.match(lines[0], pattern);
}

function freshHome() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'otahub-cli-home-'));
}

before(async () => {
  hub = await startHub({ apiTls: true });
  home = freshHome();
});

after(async () => {
  if (hub && (hub.child.exitCode !== null || hub.child.signalCode !== null)) {
    process.stderr.write(`otahubd ended early (${hub.child.exitCode ?? hub.child.signalCode}):\n` +
      `${hub.log()}\n`);
  }
  if (hub) await hub.stop();
  if (home) fs.rmSync(home, { recursive: true, force: true });
});

test('usage errors exit 2 with one line', async () => {
  assertOneLineError(await otahub([]), 2, /^otahub: .*subcommand/i);
  assertOneLineError(await otahub(['products']), 2, /^otahub: /);
  assertOneLineError(await otahub(['frobnicate']), 2, /^otahub: /);
  assertOneLineError(await otahub(['orgs', 'show']), 2, /^otahub: .*org.*required/i);
  assertOneLineError(await otahub(['orgs', 'users', 'add', 'x@example.com', '--role', 'boss']), 2,
    /^otahub: .*boss/);
  assertOneLineError(await otahub(['--url', 'ftp://example.com', 'whoami', '--token', 't']), 2,
    /^otahub: URL scheme must be https or http/);
  // No org anywhere (no flag, no env, no config): a usage error before any request.
  assertOneLineError(await cli(['products', 'list', '--token', 'x']), 2, /^otahub: no org given/);
  const help = await otahub(['products', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /rename/);
});

test('not logged in: one line, exit 1, no config written', async () => {
  assertOneLineError(await cli(['whoami']), 1, /^otahub: not logged in/);
  assert.equal(fs.existsSync(configPath()), false);
});

test('wrong password: 401 as one line, exit 1, nothing saved', async () => {
  const result = await cli(['login', '--email', hub.admin.email], { input: 'not the password\n' });
  assertOneLineError(result, 1, /^otahub: 401: invalid email or password$/);
  assert.equal(fs.existsSync(configPath()), false);
});

test('TLS: the hub is refused without its CA, and connection errors are one line', async () => {
  const other = freshHome();
  try {
    const result = await otahub(['--url', hub.apiUrl, '--token', 'x', 'whoami'], { homeDir: other });
    assertOneLineError(result, 1, /^otahub: TLS handshake with 127\.0\.0\.1:\d+ failed: certificate verify failed/);
    // A closed port.
    const refused = await otahub(['--url', 'https://127.0.0.1:1', '--token', 'x', 'whoami'],
      { homeDir: other });
    assertOneLineError(refused, 1, /^otahub: cannot connect to https:\/\/127\.0\.0\.1:1: /);
  } finally {
    fs.rmSync(other, { recursive: true, force: true });
  }
});

test('login (password on stdin) saves a 0600 config; whoami; token stays with its hub', async () => {
  const result = await cli(['login', '--email', hub.admin.email, '--note', 'cli test'],
    { input: `${hub.admin.password}\n` });
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^Logged in to https:\/\/127\.0\.0\.1:\d+ as .* <admin@example\.com>/);

  const stat = fs.statSync(configPath());
  assert.equal(stat.mode & 0o777, 0o600);
  assert.equal(fs.statSync(path.dirname(configPath())).mode & 0o777, 0o700);
  const saved = JSON.parse(fs.readFileSync(configPath(), 'utf8'));
  assert.equal(saved.url, hub.apiUrl);
  assert.equal(saved.email, hub.admin.email);
  assert.equal(saved.ca, hub.certs.ca);
  assert.equal(typeof saved.token, 'string');
  assert.ok(!result.stdout.includes(saved.token) && !result.stderr.includes(saved.token));
  // The saved token is a real one.
  const me = await hub.request('GET', '/api/users/me', { token: saved.token });
  assert.equal(me.status, 200);

  // From now on the URL and CA come from the config file.
  const whoami = await otahub(['whoami']);
  assert.equal(whoami.code, 0, whoami.stderr);
  assert.match(whoami.stdout, /<admin@example\.com> on https:\/\/127\.0\.0\.1:\d+\n$/);
  const json = await otahub(['whoami', '--json']);
  assert.equal(json.code, 0, json.stderr);
  assert.equal(JSON.parse(json.stdout).email, hub.admin.email);

  // Another URL never gets the saved token.
  const elsewhere = await otahub(['--url', 'https://127.0.0.1:9', 'whoami']);
  assertOneLineError(elsewhere, 1, /^otahub: not logged in to https:\/\/127\.0\.0\.1:9 \(the saved login is for /);
});

test('orgs: list, create, show, with and without --json', async () => {
  const list = await otahub(['orgs', 'list']);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^NAME\s+ROLE\s+CREATED\n/);
  assert.match(list.stdout, /\nacme\s+admin\s+\d{4}-/);

  const created = await otahub(['orgs', 'create', 'beta', '--json']);
  assert.equal(created.code, 0, created.stderr);
  assert.equal(JSON.parse(created.stdout).name, 'beta');

  const listJson = await otahub(['--json', 'orgs', 'list']);
  assert.equal(listJson.code, 0, listJson.stderr);
  const orgs = JSON.parse(listJson.stdout);
  assert.deepEqual(orgs.map((o) => o.name).sort(), ['acme', 'beta']);
  assert.ok(orgs.every((o) => o.role === 'admin'));

  const show = await otahub(['orgs', 'show', 'beta']);
  assert.equal(show.code, 0, show.stderr);
  assert.match(show.stdout, /^name:\s+beta$/m);
  assert.match(show.stdout, /^role:\s+admin$/m);

  assertOneLineError(await otahub(['orgs', 'create', 'beta']), 1,
    /^otahub: 409: an org with that name already exists \(name: has already been taken\)$/);
  assertOneLineError(await otahub(['orgs', 'show', 'nope']), 1, /^otahub: 404: org not found$/);
  assertOneLineError(await otahub(['orgs', 'create', 'bad name!']), 1,
    /^otahub: 422: name must be .* \(name: has invalid format\)$/);
});

test('products: create, list, show, rename, delete; 409 on a duplicate', async () => {
  const created = await otahub(['products', 'create', 'widget', '--org', 'acme']);
  assert.equal(created.code, 0, created.stderr);
  assert.equal(created.stdout, 'Created product widget\n');

  const dup = await otahub(['products', 'create', 'widget', '--org', 'acme']);
  assertOneLineError(dup, 1,
    /^otahub: 409: a product with that name already exists \(name: has already been taken\)$/);
  assert.equal(dup.stdout, '');

  // The org from the environment, then from the config file.
  const viaEnv = await otahub(['products', 'create', 'gadget', '--json'], { env: { OTAHUB_ORG: 'acme' } });
  assert.equal(viaEnv.code, 0, viaEnv.stderr);
  assert.equal(JSON.parse(viaEnv.stdout).name, 'gadget');
  const set = await otahub(['config', 'set', 'org', 'acme']);
  assert.equal(set.code, 0, set.stderr);
  assert.equal(fs.statSync(configPath()).mode & 0o777, 0o600);

  const list = await otahub(['products', 'list']);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^NAME\s+CREATED\s+UPDATED\n/);
  assert.match(list.stdout, /\ngadget\s+\d{4}-/);
  assert.match(list.stdout, /\nwidget\s+\d{4}-/);
  const listJson = await otahub(['products', 'list', '--json']);
  assert.deepEqual(JSON.parse(listJson.stdout).map((p) => p.name).sort(), ['gadget', 'widget']);
  // --org overrides the config; beta has none.
  const beta = await otahub(['products', '--org', 'beta', 'list', '--json']);
  assert.deepEqual(JSON.parse(beta.stdout), []);
  const betaHuman = await otahub(['products', 'list', '--org', 'beta']);
  assert.equal(betaHuman.stdout, 'No products.\n');

  const renamed = await otahub(['products', 'rename', 'gadget', 'gizmo', '--json']);
  assert.equal(renamed.code, 0, renamed.stderr);
  assert.equal(JSON.parse(renamed.stdout).name, 'gizmo');
  const show = await otahub(['products', 'show', 'gizmo']);
  assert.match(show.stdout, /^name:\s+gizmo$/m);
  const deleted = await otahub(['products', 'delete', 'gizmo']);
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.equal(deleted.stdout, 'Deleted product gizmo\n');
  assertOneLineError(await otahub(['products', 'show', 'gizmo']), 1, /^otahub: 404: product not found$/);
});

test('org members: add (creating a user), list, set-role, remove', async () => {
  const add = await otahub(['orgs', 'users', 'add', 'op+1@example.com', '--role', 'view',
    '--name', 'Operator', '--password', 'operator password', '--org', 'acme']);
  assert.equal(add.code, 0, add.stderr);
  assert.equal(add.stdout, 'Added op+1@example.com (view)\n');

  const list = await otahub(['orgs', 'users', 'list', '--json']);
  const members = JSON.parse(list.stdout);
  assert.deepEqual(members.find((m) => m.email === 'op+1@example.com'),
    { email: 'op+1@example.com', name: 'Operator', role: 'view' });

  const setRole = await otahub(['orgs', 'users', 'set-role', 'op+1@example.com', 'manage']);
  assert.equal(setRole.code, 0, setRole.stderr);
  assert.equal(setRole.stdout, 'Updated op+1@example.com (manage)\n');

  // The new user logs in with their own config and sees the org with their role.
  const other = freshHome();
  try {
    const login = await otahub(['--url', hub.apiUrl, '--ca', hub.certs.ca, 'login'],
      { homeDir: other, input: 'op+1@example.com\noperator password\n' });
    assert.equal(login.code, 0, login.stderr);
    const orgs = await otahub(['orgs', 'list', '--json'], { homeDir: other });
    assert.deepEqual(JSON.parse(orgs.stdout).map((o) => [o.name, o.role]), [['acme', 'manage']]);
    // A manager cannot add members: 403 as one line.
    assertOneLineError(await otahub(['orgs', 'users', 'add', 'x@example.com', '--role', 'view',
      '--org', 'acme'], { homeDir: other }), 1, /^otahub: 403: this requires the admin role/);
  } finally {
    fs.rmSync(other, { recursive: true, force: true });
  }

  const removed = await otahub(['orgs', 'users', 'remove', 'op+1@example.com']);
  assert.equal(removed.code, 0, removed.stderr);
  const after = JSON.parse((await otahub(['orgs', 'users', 'list', '--json'])).stdout);
  assert.equal(after.some((m) => m.email === 'op+1@example.com'), false);
  assertOneLineError(await otahub(['orgs', 'users', 'remove', 'admin@example.com']), 1,
    /^otahub: 409: an org must keep at least one admin$/);
});

const FIXTURES = path.join(__dirname, '..', 'fixtures', 'fwup');
const EXPECTED = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'expected.json'), 'utf8'));

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex').toUpperCase();
}

/** Asserts a failed run whose stderr ends with one `otahub:` error line (progress lines may precede it). */
function assertErrorLast(result, code, pattern) {
  assert.equal(result.code, code, `exit code; stderr: ${result.stderr}`);
  const lines = result.stderr.trimEnd().split('\n');
  assert.equal(lines.filter((l) => l.startsWith('otahub:')).length, 1, result.stderr);
  assert.match(lines[lines.length - 1], pattern);
}

test('keys: add from a .pub file and as base64, list, show, delete; invalid key is one 422 line', async () => {
  const signing = fs.readFileSync(path.join(FIXTURES, 'signing.pub'), 'utf8').trim();
  const other = fs.readFileSync(path.join(FIXTURES, 'other.pub'), 'utf8').trim();
  const fromFile = await otahub(['keys', 'add', 'signing', path.join(FIXTURES, 'signing.pub')]);
  assert.equal(fromFile.code, 0, fromFile.stderr);
  assert.equal(fromFile.stdout, 'Added key signing\n');
  const inline = await otahub(['keys', 'add', 'other', other, '--org', 'acme', '--json']);
  assert.equal(inline.code, 0, inline.stderr);
  assert.equal(JSON.parse(inline.stdout).key, other);

  const list = await otahub(['keys', 'list']);
  assert.match(list.stdout, /^NAME\s+KEY\s+CREATED\n/);
  assert.ok(list.stdout.includes(`signing  ${signing}`), list.stdout);
  const listJson = JSON.parse((await otahub(['keys', 'list', '--json'])).stdout);
  assert.deepEqual(listJson.map((k) => k.name).sort(), ['other', 'signing']);
  const show = await otahub(['keys', 'show', 'signing']);
  assert.match(show.stdout, new RegExp(`^key:\\s+${signing.replace(/[+/]/g, '\\$&')}$`, 'm'));

  assertOneLineError(await otahub(['keys', 'add', 'bad', 'not-a-key']), 1,
    /^otahub: 422: key must be .* \(key: is not a valid Ed25519 public key\)$/);
  assertOneLineError(await otahub(['keys', 'add', 'again', signing]), 1, /^otahub: 409: this key is already registered as 'signing'/);
  const removed = await otahub(['keys', 'delete', 'other']);
  assert.equal(removed.code, 0, removed.stderr);
  assert.equal(removed.stdout, 'Deleted key other\n');
  assertOneLineError(await otahub(['keys', 'show', 'other']), 1, /^otahub: 404: signing key not found$/);
});

test('firmware: streamed upload with progress lines, list, show, download, delete', async () => {
  assert.equal((await otahub(['products', 'create', 'demo'])).code, 0);
  const file = path.join(FIXTURES, 'demo-1.0.0.fw');
  const meta = EXPECTED['demo-1.0.0.fw'];
  const uuid = meta.metadata['meta-uuid'];

  const up = await otahub(['firmware', 'upload', file, '--product', 'demo', '--ttl', '3600']);
  assert.equal(up.code, 0, up.stderr);
  assert.equal(up.stdout, `Uploaded firmware ${uuid}: demo 1.0.0 (rpi4/aarch64)\n`);
  // Not a terminal: plain progress lines (no carriage returns), the last one with the totals.
  assert.ok(!up.stderr.includes('\r'));
  const progress = up.stderr.trimEnd().split('\n');
  assert.ok(progress.length >= 3, up.stderr);
  for (const line of progress.slice(0, -1)) {
    assert.match(line, /^upload demo-1\.0\.0\.fw: \d{1,2}% \([\d.]+ KiB of 256\.9 KiB\)$/);
  }
  assert.match(progress[progress.length - 1],
    /^upload demo-1\.0\.0\.fw: 100% \(256\.9 KiB of 256\.9 KiB\) done in [\d.]+ s, .*\/s$/);

  // The product from the config file; --json gives the API's data.
  assert.equal((await otahub(['config', 'set', 'product', 'demo'])).code, 0);
  const second = await otahub(['firmware', 'upload', path.join(FIXTURES, 'demo-1.1.0.fw'), '--json']);
  assert.equal(second.code, 0, second.stderr);
  const data = JSON.parse(second.stdout);
  assert.equal(data.uuid, EXPECTED['demo-1.1.0.fw'].metadata['meta-uuid']);
  assert.equal(data.version, '1.1.0');
  assert.equal(data.key, 'signing');

  const list = await otahub(['firmware', 'list']);
  assert.match(list.stdout, /^UUID\s+VERSION\s+PLATFORM\s+ARCHITECTURE\s+SIZE\s+UPLOADED\n/);
  assert.match(list.stdout, new RegExp(`\\n${uuid}\\s+1\\.0\\.0\\s+rpi4\\s+aarch64\\s+256\\.9 KiB\\s+\\d{4}-`));
  const listJson = JSON.parse((await otahub(['firmware', 'list', '--json'])).stdout);
  assert.equal(listJson.length, 2);
  const show = await otahub(['firmware', 'show', uuid]);
  assert.match(show.stdout, new RegExp(`^uuid:\\s+${uuid}$`, 'm'));
  assert.match(show.stdout, /^size:\s+263087 \(256\.9 KiB\)$/m);
  assert.match(show.stdout, /^ttl:\s+3600$/m);

  // Download to a named file and to the default UUID.fw; the bytes are the uploaded ones.
  const out = path.join(home, 'copy.fw');
  const down = await otahub(['firmware', 'download', uuid, '--out', out]);
  assert.equal(down.code, 0, down.stderr);
  assert.equal(down.stdout, `Saved 256.9 KiB to ${out}\n`);
  assert.match(down.stderr.trimEnd().split('\n').pop(), /^download .*copy\.fw: 100% .* done in /);
  assert.equal(sha256(out), meta.sha256);
  assert.equal(fs.existsSync(`${out}.part`), false);
  const byDefault = await otahub(['firmware', 'download', uuid]);
  assert.equal(byDefault.code, 0, byDefault.stderr);
  assert.equal(sha256(path.join(home, `${uuid}.fw`)), meta.sha256);
  const missing = path.join(home, 'missing.fw');
  assertErrorLast(await otahub(['firmware', 'download', '00000000-0000-5000-8000-000000000000',
    '--out', missing]), 1, /^otahub: 404: /);
  assert.equal(fs.existsSync(missing) || fs.existsSync(`${missing}.part`), false);

  // Refusals are one error line after the progress lines.
  assertErrorLast(await otahub(['firmware', 'upload', path.join(FIXTURES, 'demo-1.1.0.unsigned.fw')]),
    1, /^otahub: 422: firmware refused by the signature check/);
  assertErrorLast(await otahub(['firmware', 'upload', file]), 1, /^otahub: 409: /);
  assertOneLineError(await otahub(['keys', 'delete', 'signing']), 1,
    /^otahub: 409: the key signed 2 stored firmware\(s\); delete them first \(key: is used by stored firmware\)$/);

  const deleted = await otahub(['firmware', 'delete', uuid]);
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.equal(deleted.stdout, `Deleted firmware ${uuid}\n`);
  assertOneLineError(await otahub(['firmware', 'show', uuid]), 1, /^otahub: 404: /);
  assertOneLineError(await otahub(['firmware', 'upload', path.join(home, 'nope.fw')]), 2, /^otahub: .*nope\.fw/);
});

test('deployments: create, list, show, preview (stored and draft), update; device resolution and updates', async () => {
  const uuid = EXPECTED['demo-1.1.0.fw'].metadata['meta-uuid'];
  // A device that reported 1.0.0 on rpi4/aarch64 (as a join would record it).
  const { token } = JSON.parse(fs.readFileSync(configPath(), 'utf8'));
  const made = await hub.request('POST', '/api/orgs/acme/products/demo/devices',
    { token, body: { identifier: 'cli-dev-1', tags: ['beta'] } });
  assert.equal(made.status, 201, made.text);
  require('node:child_process').execFileSync('psql', [hub.db.url, '-qAt', '-c',
    "UPDATE devices SET version = '1.0.0', platform = 'rpi4', architecture = 'aarch64', firmware_uuid = 'old' WHERE identifier = 'cli-dev-1'"]);

  const created = await otahub(['deployments', 'create', 'beta-1.1', '--firmware', uuid, '--version', '~> 1.0',
    '--tag', 'beta', '--state', 'on', '--concurrent-updates', '5']);
  assert.equal(created.code, 0, created.stderr);
  assert.equal(created.stdout, 'Created deployment beta-1.1 (on)\n');
  const list = await otahub(['deployments', 'list']);
  assert.match(list.stdout, /^NAME\s+STATE\s+FIRMWARE\s+VERSION\s+TAGS\s+LIMIT\s+PAUSED\n/);
  assert.match(list.stdout, /\nbeta-1\.1\s+on\s+1\.1\.0\s+~> 1\.0\s+beta\s+5\s+-\n/);
  const shown = JSON.parse((await otahub(['deployments', 'show', 'beta-1.1', '--json'])).stdout);
  assert.equal(shown.counts.matching_devices, 1);

  const preview = await otahub(['deployments', 'preview', 'beta-1.1']);
  assert.equal(preview.code, 0, preview.stderr);
  assert.match(preview.stdout, /^Matching devices: 1, eligible now: 1\n/);
  assert.match(preview.stdout, /\ncli-dev-1\s+true\s/);
  const draft = await otahub(['deployments', 'preview', 'x', '--draft', '--firmware', uuid, '--tag', 'gamma']);
  assert.equal(draft.code, 0, draft.stderr);
  assert.match(draft.stdout, /^Matching devices: 0, eligible now: 0\n/);

  const resolution = await otahub(['device', 'resolution', 'cli-dev-1']);
  assert.equal(resolution.code, 0, resolution.stderr);
  assert.match(resolution.stdout, /^Deployment: beta-1\.1 → 1\.1\.0\nEligible: yes \(eligible for firmware "1\.1\.0"/);
  assert.match(resolution.stdout, /\nbeta-1\.1\s+chosen\s+-\s+chosen; /);
  const off = await otahub(['deployments', 'update', 'beta-1.1', '--state', 'off']);
  assert.equal(off.stdout, 'Updated deployment beta-1.1 (off)\n');
  const excluded = await otahub(['device', 'resolution', 'cli-dev-1']);
  assert.match(excluded.stdout, /^Deployment: none\n/);
  assert.match(excluded.stdout, /\nbeta-1\.1\s+excluded\s+inactive\s/);
  assert.equal((await otahub(['device', 'updates', 'cli-dev-1'])).stdout, 'No updates.\n');
  assertOneLineError(await otahub(['deployments', 'create', 'bad', '--firmware', uuid, '--version', '~> nope']),
    1, /^otahub: 422: conditions /);
  assertOneLineError(await otahub(['device', 'reboot', 'cli-dev-1']), 1, /^otahub: 409: the device is not connected$/);
  assert.equal((await otahub(['deployments', 'delete', 'beta-1.1'])).code, 0);
});

/** Peak RSS (VmHWM, KiB) of a running process, or 0 once it is gone. */
function peakRss(pid) {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch (_) {
    return 0;
  }
}

test('a 128 MiB upload is streamed: the CLI never holds the file in memory', async (t) => {
  const big = path.join(home, 'big.fw');
  const size = 128 * 1024 * 1024;
  fs.writeFileSync(big, crypto.randomBytes(1024 * 1024));
  fs.truncateSync(big, size);  // the rest reads as zeros
  const child = spawn(path.join(binDir(), 'otahub'), ['firmware', 'upload', big], {
    cwd: home,
    env: { PATH: process.env.PATH, HOME: home, XDG_CONFIG_HOME: path.join(home, 'xdg'),
      ASAN_OPTIONS: process.env.ASAN_OPTIONS || '', UBSAN_OPTIONS: process.env.UBSAN_OPTIONS || '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const err = [];
  child.stderr.on('data', (d) => err.push(d));
  child.stdout.resume();
  let peak = 0;
  let samples = 0;
  const exited = new Promise((resolve) => child.on('close', resolve));
  const sampler = setInterval(() => {
    const rss = peakRss(child.pid);
    if (rss > 0) samples += 1;
    peak = Math.max(peak, rss);
  }, 5);
  const code = await exited;
  clearInterval(sampler);
  const stderr = Buffer.concat(err).toString();
  fs.rmSync(big);
  // The hub spools the whole body, then refuses it: not a ZIP.
  assert.equal(code, 1, stderr);
  assert.match(stderr.trimEnd().split('\n').pop(), /^otahub: 422: firmware refused by the /);
  assert.match(stderr, /^upload big\.fw: 50% \(64\.0 MiB of 128\.0 MiB\)$/m);
  assert.ok(samples > 0, 'sampled the running CLI');
  if (sanitizedBinary('otahub')) {
    // ASan keeps freed buffers and their shadow resident (about 108 MiB here, even with a 16 MiB
    // quarantine): the bound is asserted by the release build's run of this same test.
    t.diagnostic(`peak RSS ${peak} KiB under ASan`);
    t.skip('RSS bound not asserted for an ASan build (the release run asserts it)');
    return;
  }
  assert.ok(peak < 64 * 1024, `peak RSS ${peak} KiB for a 128 MiB upload`);
});

test('config list hides the token; logout forgets it', async () => {
  const list = await otahub(['config', 'list']);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^token = \(hidden\)$/m);
  assert.match(list.stdout, /^org = acme$/m);
  const saved = JSON.parse(fs.readFileSync(configPath(), 'utf8'));
  assert.ok(!list.stdout.includes(saved.token));
  assertOneLineError(await otahub(['config', 'set', 'token', 'x']), 2, /^otahub: unknown setting 'token'/);

  const logout = await otahub(['logout']);
  assert.equal(logout.code, 0, logout.stderr);
  const after = JSON.parse(fs.readFileSync(configPath(), 'utf8'));
  assert.equal(after.token, undefined);
  assert.equal(after.org, 'acme');
  assertOneLineError(await otahub(['whoami']), 1, /^otahub: not logged in/);
  // A token from the environment still works.
  const token = await hub.login();
  const whoami = await otahub(['whoami', '--json'], { env: { OTAHUB_TOKEN: token } });
  assert.equal(whoami.code, 0, whoami.stderr);
  assert.equal(JSON.parse(whoami.stdout).email, hub.admin.email);
});
