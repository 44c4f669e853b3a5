'use strict';
// Starts a real otahubd against a fresh database on the throwaway PostgreSQL, for e2e and
// integration tests. Needs OTAHUB_TEST_DATABASE_URL (superuser URI) and OTAHUB_BIN_DIR.
const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');
const https = require('node:https');

function requireEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (deploy/test sets it)`);
  return value;
}

function binDir() {
  return requireEnv('OTAHUB_BIN_DIR');
}

/// Creates a new empty database and returns its URI.
function createDatabase(prefix = 'otahub_test') {
  const admin = requireEnv('OTAHUB_TEST_DATABASE_URL');
  const name = `${prefix}_${crypto.randomBytes(6).toString('hex')}`;
  execFileSync('psql', [admin, '-q', '-v', 'ON_ERROR_STOP=1', '-c', `CREATE DATABASE ${name}`]);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return { name, url: url.toString() };
}

function dropDatabase(name) {
  const admin = requireEnv('OTAHUB_TEST_DATABASE_URL');
  try {
    execFileSync('psql', [admin, '-q', '-c', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]);
  } catch (_) { /* best effort on teardown */ }
}

/// A P-256 server CA and a server certificate for localhost/127.0.0.1, made with the openssl CLI.
function makeServerCerts(dir) {
  const run = (args) => execFileSync('openssl', args, { stdio: 'pipe' });
  run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', path.join(dir, 'server-ca-key.pem'), '-out', path.join(dir, 'server-ca.pem'),
    '-days', '30', '-subj', '/CN=otahub test server CA']);
  run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', path.join(dir, 'server-key.pem'), '-out', path.join(dir, 'server.csr'),
    '-subj', '/CN=localhost']);
  fs.writeFileSync(path.join(dir, 'ext.cnf'),
    'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n');
  run(['x509', '-req', '-in', path.join(dir, 'server.csr'), '-CA', path.join(dir, 'server-ca.pem'),
    '-CAkey', path.join(dir, 'server-ca-key.pem'), '-CAcreateserial', '-days', '30',
    '-extfile', path.join(dir, 'ext.cnf'), '-out', path.join(dir, 'server.pem')]);
  return {
    ca: path.join(dir, 'server-ca.pem'),
    cert: path.join(dir, 'server.pem'),
    key: path.join(dir, 'server-key.pem'),
  };
}

function runBin(name, args, env) {
  return execFileSync(path.join(binDir(), name), args, { env, stdio: 'pipe' }).toString();
}

async function waitForFile(file, child, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`otahubd exited with ${child.exitCode}`);
    if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8'));
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('otahubd did not become ready in time');
}

/**
 * Starts a hub. Options: apiTls (default false), env (extra OTAHUB_* settings), database (reuse
 * {name,url}), admin {email,password,org} (created before start).
 * Returns {apiUrl, devicePort, certs, db, dataDir, env, log(), stop(), request(...)}.
 */
async function startHub(options = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'otahub-hub-'));
  const certs = options.certs || makeServerCerts(dir);
  const db = options.database || createDatabase();
  const readyFile = path.join(dir, 'ready.json');
  const env = {
    PATH: process.env.PATH,
    ASAN_OPTIONS: process.env.ASAN_OPTIONS || '',
    UBSAN_OPTIONS: process.env.UBSAN_OPTIONS || '',
    OTAHUB_DATABASE_URL: db.url,
    OTAHUB_API_LISTEN: '127.0.0.1:0',
    OTAHUB_DEVICE_LISTEN: '127.0.0.1:0',
    OTAHUB_TLS_CERT: certs.cert,
    OTAHUB_TLS_KEY: certs.key,
    OTAHUB_API_TLS: options.apiTls ? 'true' : 'false',
    OTAHUB_DATA_DIR: path.join(dir, 'data'),
    OTAHUB_SECRET_KEY: crypto.randomBytes(32).toString('hex'),
    OTAHUB_LOG_LEVEL: process.env.OTAHUB_TEST_LOG_LEVEL || 'info',
    OTAHUB_READY_FILE: readyFile,
    OTAHUB_DB_THREADS: '4',
    OTAHUB_DB_POOL_SIZE: '4',
    // Tests stop hubs often; the drain test sets its own period.
    OTAHUB_DRAIN_SECONDS: '0',
    ...(options.env || {}),
  };
  if (!options.database) runBin('otahubd', ['migrate'], env);
  const admin = options.admin === undefined
    ? { email: 'admin@example.com', password: 'correct horse battery', org: 'acme' }
    : options.admin;
  if (admin) {
    runBin('otahubd', ['create-user', '--email', admin.email, '--password', admin.password,
      '--org', admin.org], env);
  }
  const logChunks = [];
  const child = spawn(path.join(binDir(), 'otahubd'), ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d) => logChunks.push(d));
  child.stderr.on('data', (d) => logChunks.push(d));
  let ports;
  try {
    ports = await waitForFile(readyFile, child, 20000);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${err.message}\n${Buffer.concat(logChunks).toString()}`);
  }
  const scheme = options.apiTls ? 'https' : 'http';
  const hub = {
    dir,
    db,
    env,
    certs,
    admin,
    child,
    apiPort: ports.api_port,
    devicePort: ports.device_port,
    apiUrl: `${scheme}://127.0.0.1:${ports.api_port}`,
    log: () => Buffer.concat(logChunks).toString(),
    /** Sends a request; resolves {status, headers, body (parsed JSON when possible), text}. */
    request(method, urlPath, { token, body, headers = {}, raw } = {}) {
      return new Promise((resolve, reject) => {
        const lib = options.apiTls ? https : http;
        const h = { ...headers };
        if (token) h.authorization = `Bearer ${token}`;
        let payload = raw;
        if (body !== undefined && raw === undefined) {
          payload = typeof body === 'string' ? body : JSON.stringify(body);
          h['content-type'] = h['content-type'] || 'application/json';
        }
        if (payload !== undefined) h['content-length'] = Buffer.byteLength(payload);
        const req = lib.request(`${hub.apiUrl}${urlPath}`, {
          method, headers: h, ca: options.apiTls ? fs.readFileSync(certs.ca) : undefined,
        }, (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            let parsed = null;
            try { parsed = text ? JSON.parse(text) : null; } catch (_) { parsed = null; }
            resolve({ status: res.statusCode, headers: res.headers, body: parsed, text });
          });
        });
        req.on('error', reject);
        if (payload !== undefined) req.write(payload);
        req.end();
      });
    },
    /** Logs in and returns a token. */
    async login(email = admin.email, password = admin.password) {
      const res = await hub.request('POST', '/api/users/auth', { body: { email, password, note: 'test' } });
      if (res.status !== 200) throw new Error(`login failed: ${res.status} ${res.text}`);
      return res.body.data.token;
    },
    async stop({ signal = 'SIGTERM', keepDatabase = false } = {}) {
      // A child that already ended (exit code, or killed by a signal) emits no second 'exit'.
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill(signal);
        await exited;
      }
      if (!keepDatabase && !options.database) dropDatabase(db.name);
      fs.rmSync(dir, { recursive: true, force: true });
      return child.exitCode;
    },
  };
  return hub;
}

/**
 * True when binary `name` of binDir() is built with AddressSanitizer: its RSS then includes
 * the sanitizer's quarantine and shadow memory, so memory bounds do not apply to it.
 */
function sanitizedBinary(name) {
  try {
    return execFileSync('ldd', [path.join(binDir(), name)], { encoding: 'utf8' }).includes('libasan');
  } catch (_) {
    return false;
  }
}

module.exports = { startHub, createDatabase, dropDatabase, makeServerCerts, runBin, binDir, sanitizedBinary };
