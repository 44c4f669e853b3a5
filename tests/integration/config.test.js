'use strict';
// otahubd configuration: bad settings are refused with exit code 2 and one line naming the
// setting; a TOML file works and the environment overrides it; `otahubd migrate` is idempotent.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { createDatabase, dropDatabase, makeServerCerts, binDir } = require('../e2e/lib/hub');

const CONFIG_ERROR_EXIT = 2;
let dir;
let certs;

test.before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'otahub-config-'));
  certs = makeServerCerts(dir);
});

test.after(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs otahubd with exactly `env` (plus PATH); resolves {code, stdout, stderr}. */
function otahubd(args, env, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(binDir(), 'otahubd'), args, {
      env: { PATH: process.env.PATH, ASAN_OPTIONS: process.env.ASAN_OPTIONS || '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out = [];
    const err = [];
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
  });
}

/** A complete, valid serve environment (the database need not exist: config fails first). */
function goodEnv() {
  return {
    OTAHUB_DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/never_used',
    OTAHUB_API_LISTEN: '127.0.0.1:0',
    OTAHUB_DEVICE_LISTEN: '127.0.0.1:0',
    OTAHUB_TLS_CERT: certs.cert,
    OTAHUB_TLS_KEY: certs.key,
    OTAHUB_DATA_DIR: path.join(dir, 'data'),
    OTAHUB_LOG_LEVEL: 'info',
  };
}

async function expectRefused(args, env, setting) {
  const r = await otahubd(args, env);
  const label = `${args.join(' ')} ${JSON.stringify(env)}`;
  assert.equal(r.code, CONFIG_ERROR_EXIT, `${label}: exit ${r.code}\n${r.stdout}${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  assert.equal(lines.length, 1, `${label}: one line expected on stderr, got:\n${r.stderr}`);
  assert.ok(lines[0].includes(setting), `${label}: '${lines[0]}' does not name ${setting}`);
  assert.equal(r.stdout, '', `${label}: nothing on stdout`);
  return lines[0];
}

test('missing OTAHUB_DATABASE_URL is refused (serve and migrate)', async () => {
  const env = goodEnv();
  delete env.OTAHUB_DATABASE_URL;
  await expectRefused(['serve'], env, 'OTAHUB_DATABASE_URL');
  await expectRefused(['migrate'], env, 'OTAHUB_DATABASE_URL');
  await expectRefused(['serve'], { ...env, OTAHUB_DATABASE_URL: '' }, 'OTAHUB_DATABASE_URL');
});

test('a bad OTAHUB_API_LISTEN or OTAHUB_DEVICE_LISTEN is refused', async () => {
  for (const value of ['localhost', '127.0.0.1:', '127.0.0.1:65536', '127.0.0.1:http', ':4000', '127.0.0.1:-1']) {
    await expectRefused(['serve'], { ...goodEnv(), OTAHUB_API_LISTEN: value }, 'OTAHUB_API_LISTEN');
  }
  await expectRefused(['serve'], { ...goodEnv(), OTAHUB_DEVICE_LISTEN: 'nope' }, 'OTAHUB_DEVICE_LISTEN');
});

test('a missing certificate or key file is refused', async () => {
  await expectRefused(['serve'], { ...goodEnv(), OTAHUB_TLS_CERT: path.join(dir, 'missing.pem') }, 'OTAHUB_TLS_CERT');
  await expectRefused(['serve'], { ...goodEnv(), OTAHUB_TLS_KEY: path.join(dir, 'missing-key.pem') }, 'OTAHUB_TLS_KEY');
  const noKey = goodEnv();
  delete noKey.OTAHUB_TLS_KEY;
  await expectRefused(['serve'], noKey, 'OTAHUB_TLS_KEY');
  const neither = goodEnv();
  delete neither.OTAHUB_TLS_KEY;
  delete neither.OTAHUB_TLS_CERT;
  await expectRefused(['serve'], neither, 'OTAHUB_TLS_CERT');
  // A directory is not a certificate file.
  await expectRefused(['serve'], { ...goodEnv(), OTAHUB_TLS_CERT: dir }, 'OTAHUB_TLS_CERT');
});

test('a bad log level and other malformed values are refused, naming the setting', async () => {
  await expectRefused(['serve'], { ...goodEnv(), OTAHUB_LOG_LEVEL: 'loud' }, 'OTAHUB_LOG_LEVEL');
  await expectRefused(['serve'], { ...goodEnv(), OTAHUB_LOG_LEVEL: 'INFO' }, 'OTAHUB_LOG_LEVEL');
  const malformed = {
    OTAHUB_API_TLS: 'maybe',
    OTAHUB_LOG_JSON: '2',
    OTAHUB_DB_POOL_SIZE: '0',
    OTAHUB_DB_THREADS: 'eight',
    OTAHUB_IO_THREADS: '1.5',
    OTAHUB_API_BODY_LIMIT: '10',
    OTAHUB_HANDSHAKE_TIMEOUT: '99999999999999999999',
    OTAHUB_DEVICE_TLS_RECORDS: 'boringssl',
    OTAHUB_DB_PREPARED_STATEMENTS: 'sometimes',
    OTAHUB_REFUSAL_RETENTION_DAYS: '-1',
    OTAHUB_OPENSSL_EC_KEYS: 'fast',
    OTAHUB_TLS_VERIFY_CACHE: '-5',
  };
  for (const [setting, value] of Object.entries(malformed)) {
    await expectRefused(['serve'], { ...goodEnv(), [setting]: value }, setting);
  }
});

test('--config: an unknown key, a malformed file or a missing file is refused', async () => {
  const unknown = path.join(dir, 'unknown.toml');
  fs.writeFileSync(unknown, 'api_listen = "127.0.0.1:0"\ndatabse_url = "postgresql://x"\n');
  const line = await expectRefused(['--config', unknown, 'serve'], goodEnv(), 'databse_url');
  assert.match(line, /unknown/);

  const broken = path.join(dir, 'broken.toml');
  fs.writeFileSync(broken, 'api_listen = "127.0.0.1:0\nlog_level = \n');
  await expectRefused(['--config', broken, 'serve'], goodEnv(), '--config');

  const typed = path.join(dir, 'typed.toml');
  fs.writeFileSync(typed, 'db_pool_size = [1, 2]\n');
  await expectRefused(['--config', typed, 'serve'], goodEnv(), 'OTAHUB_DB_POOL_SIZE');

  const badValue = path.join(dir, 'bad-value.toml');
  fs.writeFileSync(badValue, 'log_level = "chatty"\n');
  const noLevel = goodEnv();
  delete noLevel.OTAHUB_LOG_LEVEL;   // the environment would override the file
  await expectRefused(['--config', badValue, 'serve'], noLevel, 'OTAHUB_LOG_LEVEL');

  await expectRefused(['--config', path.join(dir, 'absent.toml'), 'serve'], goodEnv(), '--config');
});

test('migrate runs from a TOML file, the environment overrides it, and it is idempotent', async () => {
  const db = createDatabase('otahub_cfg');
  try {
    const toml = path.join(dir, 'migrate.toml');
    // The file's log level is invalid; the environment's valid one wins.
    fs.writeFileSync(toml, `database_url = "${db.url}"\nlog_level = "chatty"\n`);
    const env = { OTAHUB_LOG_LEVEL: 'info' };
    const psql = (sql) => execFileSync('psql', [db.url, '-At', '-v', 'ON_ERROR_STOP=1', '-c', sql]).toString().trim();

    const first = await otahubd(['--config', toml, 'migrate'], env);
    assert.equal(first.code, 0, first.stdout + first.stderr);
    const rows = psql('SELECT name || \'|\' || applied_at FROM schema_migrations ORDER BY name').split('\n');
    assert.ok(rows.length >= 1 && rows[0].startsWith('0001_init|'), rows.join('\n'));
    const appliedLogged = (first.stdout + first.stderr).match(/applied migration \S+/g) || [];
    assert.equal(appliedLogged.length, rows.length, `every applied migration is logged:\n${first.stdout}`);
    assert.equal(psql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'orgs'"), '1');

    const second = await otahubd(['--config', toml, 'migrate'], env);
    assert.equal(second.code, 0, second.stdout + second.stderr);
    assert.doesNotMatch(second.stdout + second.stderr, /applied migration/);
    assert.match(second.stdout + second.stderr, /up to date/);
    const after = psql('SELECT name || \'|\' || applied_at FROM schema_migrations ORDER BY name').split('\n');
    assert.deepEqual(after, rows, 'the second run applied nothing and changed nothing');
  } finally {
    dropDatabase(db.name);
  }
});

test('concurrent migrates on a fresh database both succeed and apply each migration once', async () => {
  const db = createDatabase('otahub_cfg');
  try {
    const env = { OTAHUB_DATABASE_URL: db.url };
    const [a, b] = await Promise.all([otahubd(['migrate'], env), otahubd(['migrate'], env)]);
    assert.equal(a.code, 0, a.stdout + a.stderr);
    assert.equal(b.code, 0, b.stdout + b.stderr);
    const applied = [a, b].map((r) => ((r.stdout + r.stderr).match(/applied migration \S+/g) || []).length);
    const rows = Number(execFileSync('psql', [db.url, '-At', '-c', 'SELECT count(*) FROM schema_migrations']).toString());
    assert.equal(applied[0] + applied[1], rows, `applied ${applied} for ${rows} migrations`);
    assert.ok(applied.includes(0), 'one of the two found nothing left to do');
  } finally {
    dropDatabase(db.name);
  }
});
