'use strict';
// The API's TLS listener keeps its deadlines (server/net/http_server.cpp, ApiTlsStream): a
// connection that never completes its handshake is cut at OTAHUB_HANDSHAKE_TIMEOUT, and a
// keep-alive connection serving requests is not (each request moves the deadline on).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const tls = require('node:tls');
const { startHub } = require('../e2e/lib/hub');

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
