'use strict';
// The API's TLS listener (server/net/http_server.cpp, ApiTlsStream: OpenSSL on the socket).
// It keeps its deadlines: a connection that never completes its handshake is cut at
// OTAHUB_HANDSHAKE_TIMEOUT, a keep-alive connection serving requests is not (each request moves
// the deadline on). Firmware goes up and comes back byte-exact over it, whole and in ranges on
// one keep-alive connection, and a refused oversized body still gets its 413.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const https = require('node:https');
const net = require('node:net');
const tls = require('node:tls');
const { startHub } = require('../e2e/lib/hub');
const fw = require('./firmware_support');

const HANDSHAKE_TIMEOUT_S = 1;
let hub;

before(async () => {
  hub = await startHub({ apiTls: true, env: { OTAHUB_HANDSHAKE_TIMEOUT: String(HANDSHAKE_TIMEOUT_S) } });
});
after(async () => { if (hub) await hub.stop(); });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('a TCP connection that sends no ClientHello is closed at the handshake deadline', async () => {
  const started = Date.now();
  const socket = net.connect(hub.apiPort, '127.0.0.1');
  socket.on('data', () => {});
  const closedAfter = await new Promise((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error('still open after 10 s')), 10000);
    socket.on('close', () => { clearTimeout(guard); resolve(Date.now() - started); });
    socket.on('error', () => {});
  });
  assert.ok(closedAfter >= HANDSHAKE_TIMEOUT_S * 1000 - 100, `closed after ${closedAfter} ms`);
  assert.ok(closedAfter < HANDSHAKE_TIMEOUT_S * 1000 + 3000, `closed after ${closedAfter} ms`);
});

test('a stalled handshake (ClientHello sent, nothing after) is cut too', async () => {
  // A ClientHello whose client never answers the server's flight: the raw bytes of a TLS
  // client's first flight, taken from a client connection to a local server that only records.
  const hello = await new Promise((resolve, reject) => {
    const server = net.createServer((s) => {
      s.once('data', (d) => { resolve(d); s.destroy(); server.close(); });
    });
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const c = tls.connect({ host: '127.0.0.1', port: server.address().port, rejectUnauthorized: false });
      c.on('error', () => {});
    });
  });
  const started = Date.now();
  const socket = net.connect(hub.apiPort, '127.0.0.1', () => socket.write(hello));
  let answered = 0;
  socket.on('data', (d) => { answered += d.length; });
  const closedAfter = await new Promise((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error('still open after 10 s')), 10000);
    socket.on('close', () => { clearTimeout(guard); resolve(Date.now() - started); });
    socket.on('error', () => {});
  });
  assert.ok(answered > 0, 'the hub answered the ClientHello');
  assert.ok(closedAfter >= HANDSHAKE_TIMEOUT_S * 1000 - 100, `closed after ${closedAfter} ms`);
  assert.ok(closedAfter < HANDSHAKE_TIMEOUT_S * 1000 + 3000, `closed after ${closedAfter} ms`);
});

test('a keep-alive connection serves requests past the handshake deadline', async () => {
  const socket = tls.connect({ host: '127.0.0.1', port: hub.apiPort, servername: 'localhost',
    ca: fs.readFileSync(hub.certs.ca) });
  await new Promise((resolve, reject) => { socket.once('secureConnect', resolve); socket.once('error', reject); });
  let closed = false;
  socket.on('close', () => { closed = true; });
  let received = '';
  socket.on('data', (d) => { received += d.toString('latin1'); });
  const request = 'GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n';
  // Four requests over 3 × the handshake deadline on one connection.
  for (let i = 0; i < 4; i++) {
    const before = (received.match(/HTTP\/1\.1 /g) || []).length;
    socket.write(request);
    const deadline = Date.now() + 5000;
    while ((received.match(/HTTP\/1\.1 /g) || []).length === before && Date.now() < deadline && !closed) await sleep(10);
    assert.equal((received.match(/HTTP\/1\.1 200/g) || []).length, i + 1, `response ${i + 1}: ${received.slice(-300)}`);
    await sleep(HANDSHAKE_TIMEOUT_S * 1000 * 0.9);
  }
  assert.equal(closed, false, 'the connection was cut while in use');
  socket.destroy();
});

/** An HTTPS request to the hub; resolves {status, headers, body (Buffer)}. */
function request(urlPath, { method = 'GET', headers = {}, body, agent } = {}) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (body !== undefined) h['content-length'] = body.length;
    const req = https.request(`${hub.apiUrl}${urlPath}`, {
      method, headers: h, agent: agent || false, ca: fs.readFileSync(hub.certs.ca), servername: 'localhost',
    }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts),
        reused: req.reusedSocket }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

test('firmware over TLS: a 6 MiB upload comes back byte-exact, whole and in ranges, on one connection', async () => {
  const token = await fw.setupOrg(hub);
  const archive = fw.archiveWithResource('8.0.0', 6 * 1048576 + 777);
  const auth = { authorization: `Bearer ${token}` };
  const up = await request(fw.firmwaresPath('acme', 'demo'), {
    method: 'POST', body: archive, headers: { ...auth, 'content-type': 'application/octet-stream' },
  });
  assert.equal(up.status, 201, up.body.toString());
  const uuid = JSON.parse(up.body.toString()).data.uuid;
  const download = `${fw.firmwaresPath('acme', 'demo')}/${uuid}/download`;
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const whole = await request(download, { headers: auth, agent });
    assert.equal(whole.status, 200);
    assert.ok(whole.body.equals(archive), 'whole body differs from the upload');
    for (const [first, last] of [[0, 0], [3, 2 * 1048576 + 5], [2 * 1048576 - 1, 4 * 1048576], [archive.length - 100, archive.length - 1]]) {
      const res = await request(download, { headers: { ...auth, range: `bytes=${first}-${last}` }, agent });
      assert.equal(res.status, 206, `${first}-${last}`);
      assert.ok(res.body.equals(archive.subarray(first, last + 1)), `${first}-${last}`);
      assert.equal(res.reused, true, `${first}-${last} went over the first request's connection`);
    }
  } finally {
    agent.destroy();
  }
});

test('a body over the limit gets its 413 over TLS, not a reset', async () => {
  const token = await hub.login();
  const body = Buffer.alloc(3 * 1048576, 0x61); // over OTAHUB_API_BODY_LIMIT's 1 MiB default
  const res = await request('/api/orgs/acme/products', {
    method: 'POST', body, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
  }).catch((err) => ({ status: 0, body: Buffer.from(String(err)) }));
  assert.equal(res.status, 413, res.body.toString().slice(0, 200));
  assert.match(JSON.parse(res.body.toString()).errors.detail, /limit/);
});
