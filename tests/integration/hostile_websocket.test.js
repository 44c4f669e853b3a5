'use strict';
// Hostile WebSocket framing against the device endpoint, following Autobahn|Testsuite's
// categories (Autobahn itself does not install here: test-tools.md §2). Each case writes
// hand-made frames over mutual TLS and checks the close code (or HTTP status) the hub answers,
// then checks that another device on the hub is still served (a heartbeat round trip).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const tls = require('node:tls');
const { startDeviceFixture, eventually } = require('../e2e/lib/device_fixture');
const { frame, closePayload, openRawWs, processAlive } = require('./hostile_support');

const TEXT = 1;
const BINARY = 2;
const CONT = 0;
const CLOSE = 8;
const PING = 9;
const MAX_MESSAGE = 1 << 20; // DeviceServerOptions::max_message_bytes
const HEARTBEAT = '[null,"1","phoenix","heartbeat",{}]';

let f;
let root;
let sentinel;
let serial = 0;

before(async () => {
  f = await startDeviceFixture({ env: { OTAHUB_HANDSHAKE_TIMEOUT: '2' } });
  root = f.pki.root('Hostile WS Root');
  await f.registerCa(root, { jitp: { product_name: 'sensor', tags: [], description: '' } });
  sentinel = await f.connect(root.issueLeaf({ cn: 'ws-sentinel' }));
});

after(async () => {
  if (sentinel) await sentinel.close();
  if (f) {
    await f.hub.stop();
    f.pki.cleanup();
  }
});

/** The hub still serves: its process lives and the sentinel device's heartbeat is answered. */
async function assertHubServes(what) {
  assert.ok(processAlive(f.hub.child.pid), `${what}: otahubd is alive`);
  assert.equal(f.hub.child.exitCode, null, `${what}: otahubd has not exited`);
  const rtt = await sentinel.ping(3000);
  assert.ok(rtt >= 0, `${what}: sentinel heartbeat answered`);
  assert.equal(sentinel.closes.length, 0, `${what}: sentinel never disconnected`);
}

async function open() {
  serial += 1;
  const leaf = root.issueLeaf({ cn: `ws-hostile-${serial}` });
  return openRawWs({ port: f.hub.devicePort, cert: leaf.chainPem, key: leaf.keyPem, ca: f.serverCa });
}

/** Writes `frames` on a fresh websocket and returns the close the hub answers with. */
async function closeAfter(frames) {
  const ws = await open();
  for (const b of frames) ws.write(b);
  const close = await ws.waitClose(5000);
  ws.destroy();
  return close;
}

const text = (payload, extra = {}) => frame({ opcode: TEXT, payload, ...extra });

// [name, frames to send, expected close code]
const protocolCases = [
  ['unmasked client text frame', [text(HEARTBEAT, { mask: false })], 1002],
  ['RSV1 set without an extension', [text(HEARTBEAT, { rsv: 4 })], 1002],
  ['RSV2 set', [text(HEARTBEAT, { rsv: 2 })], 1002],
  ['RSV3 set', [text(HEARTBEAT, { rsv: 1 })], 1002],
  ...[3, 4, 5, 6, 7].map((op) => [`reserved data opcode 0x${op.toString(16)}`, [frame({ opcode: op, payload: 'x' })], 1002]),
  ...[0xb, 0xc, 0xd, 0xe, 0xf].map((op) => [`reserved control opcode 0x${op.toString(16)}`, [frame({ opcode: op })], 1002]),
  ['fragmented ping (control frame without FIN)', [frame({ fin: false, opcode: PING, payload: 'a' }), frame({ opcode: CONT, payload: 'b' })], 1002],
  ['fragmented close', [frame({ fin: false, opcode: CLOSE, payload: closePayload(1000) })], 1002],
  ['ping with a 126-byte payload (control frames are at most 125)', [frame({ opcode: PING, payload: Buffer.alloc(126, 0x61) })], 1002],
  ['close with a 1-byte payload', [frame({ opcode: CLOSE, payload: Buffer.from([0x03]) })], 1002],
  ...[0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999].map((code) =>
    [`close with the invalid code ${code}`, [frame({ opcode: CLOSE, payload: closePayload(code) })], 1002]),
  // Autobahn 7.5.1: "clean close with protocol error or invalid utf-8 code".
  ['close with a valid code and an invalid UTF-8 reason', [frame({ opcode: CLOSE, payload: Buffer.concat([closePayload(1000), Buffer.from([0xc3, 0x28])]) })], [1002, 1007]],
  ['continuation frame without a start', [frame({ opcode: CONT, payload: HEARTBEAT })], 1002],
  ['a new text frame inside a fragmented message', [text('[null,', { fin: false }), text(HEARTBEAT)], 1002],
  ['invalid UTF-8 in a text frame', [text(Buffer.from([0x5b, 0xc3, 0x28, 0x5d]))], 1007],
  ['UTF-16 surrogate encoded in UTF-8 (CESU)', [text(Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22]))], 1007],
  ['overlong UTF-8 encoding of "/"', [text(Buffer.from([0x22, 0xc0, 0xaf, 0x22]))], 1007],
  ['code point above U+10FFFF', [text(Buffer.from([0x22, 0xf4, 0x90, 0x80, 0x80, 0x22]))], 1007],
  ['invalid UTF-8 split across fragments (valid lead, bad continuation)', [
    text(Buffer.from([0x22, 0xf0, 0x9f]), { fin: false }),
    frame({ opcode: CONT, payload: Buffer.from([0x28, 0x22]) }),
  ], 1007],
  ['truncated code point at the end of a fragmented message', [
    text(Buffer.from([0x22, 0xf0, 0x9f]), { fin: false }),
    frame({ opcode: CONT, payload: Buffer.from([0x98]) }),
  ], 1007],
  // RFC 6455 §5.2 makes the MSB 0; Beast checks the length against the message limit first.
  ['64-bit length with the most significant bit set', [text('', { length: (1n << 63n) + 5n })], [1002, 1009]],
  ['huge declared length (1 TiB)', [text('', { length: 1n << 40n })], 1009],
  ['declared length one byte over the message limit', [text('', { length: MAX_MESSAGE + 1 })], 1009],
  ['fragments that add up to more than the message limit', [
    text(Buffer.alloc(MAX_MESSAGE / 2, 0x20), { fin: false }),
    frame({ opcode: CONT, payload: Buffer.alloc(MAX_MESSAGE / 2 + 16, 0x20), fin: false }),
  ], 1009],
  ['binary frame (vsn=2.0.0 is JSON text)', [frame({ opcode: BINARY, payload: HEARTBEAT })], 1003],
  // The session waits for a frame before it allocates a read buffer; an empty message is
  // complete at that point and must still be decoded (and refused), not skipped.
  ['an empty text message (not a Phoenix frame)', [text('')], 1007],
];

for (const [name, frames, expected] of protocolCases) {
  const codes = [expected].flat();
  test(`${name}: close ${codes.join(' or ')}, the hub still serves`, async () => {
    const close = await closeAfter(frames);
    assert.ok(codes.includes(close.code), `${name}: got ${JSON.stringify({ code: close.code, reason: close.reason, ended: close.ended })}`);
    await assertHubServes(name);
  });
}

// Autobahn 7.13.x (informational): codes 5000 and up are outside every range RFC 6455 §7.4
// defines. Beast treats them as application codes and echoes them; either failing with 1002 or
// echoing is a clean close. What must hold: the connection ends and the hub keeps serving.
for (const code of [5000, 65535]) {
  test(`close with the undefined code ${code}: 1002 or echoed, the connection ends, the hub still serves`, async () => {
    const ws = await open();
    ws.write(frame({ opcode: CLOSE, payload: closePayload(code) }));
    const close = await ws.waitClose(5000);
    assert.ok([1002, code].includes(close.code), `got ${close.code}`);
    await eventually(() => ws.ended, 'the hub to end the TCP connection');
    await assertHubServes(`close ${code}`);
  });
}

test('control: a valid heartbeat split across fragments with a code point cut in two is answered', async () => {
  const ws = await open();
  const msg = Buffer.from('[null,"7","phoenix","heartbeat",{"x":"\u{1F600}"}]');
  const cut = msg.indexOf(0xf0) + 2; // inside the 4-byte emoji
  ws.write(text(msg.subarray(0, cut), { fin: false }));
  ws.write(frame({ opcode: PING, payload: 'mid' })); // a control frame may interleave
  ws.write(frame({ opcode: CONT, payload: msg.subarray(cut) }));
  const reply = await ws.waitFor(() => ws.messages().find((m) => m[1] === '7'), 'the heartbeat reply');
  assert.deepEqual(reply, [null, '7', 'phoenix', 'phx_reply', { status: 'ok', response: {} }]);
  const pong = ws.frames.find((fr) => fr.opcode === 0xa);
  assert.ok(pong, 'a pong came back');
  assert.equal(pong.payload.toString(), 'mid', 'the pong echoes the ping payload');
  ws.write(frame({ opcode: CLOSE, payload: closePayload(1000, 'bye') }));
  const close = await ws.waitClose();
  assert.equal(close.code, 1000, 'a normal close is echoed');
  ws.destroy();
  await assertHubServes('valid fragmented message');
});

test('a heartbeat after an empty first fragment, and two messages in one TCP write, are all answered', async () => {
  const ws = await open();
  ws.write(text('', { fin: false }));
  ws.write(frame({ opcode: CONT, payload: '[null,"21","phoenix","heartbeat",{}]' }));
  // Two whole messages in one write: the second is already buffered when the first is done.
  ws.write(Buffer.concat([text('[null,"22","phoenix","heartbeat",{}]'), text('[null,"23","phoenix","heartbeat",{}]')]));
  for (const ref of ['21', '22', '23']) {
    const reply = await ws.waitFor(() => ws.messages().find((m) => m[1] === ref), `the reply to ${ref}`);
    assert.deepEqual(reply, [null, ref, 'phoenix', 'phx_reply', { status: 'ok', response: {} }]);
  }
  ws.destroy();
  await assertHubServes('empty first fragment and coalesced messages');
});

test('control: a 125-byte ping is answered with the same payload', async () => {
  const ws = await open();
  const payload = Buffer.alloc(125, 0x7a);
  ws.write(frame({ opcode: PING, payload }));
  const pong = await ws.waitFor(() => ws.frames.find((fr) => fr.opcode === 0xa), 'the pong');
  assert.ok(pong.payload.equals(payload));
  ws.destroy();
  await assertHubServes('125-byte ping');
});

test('a frame cut off mid-payload and the TCP connection dropped: the hub still serves', async () => {
  const ws = await open();
  ws.write(text(HEARTBEAT).subarray(0, 9));
  ws.destroy();
  await assertHubServes('half frame then reset');
});

// --- upgrade request refusals (HTTP status before any frame) ---

test('upgrade without Sec-WebSocket-Key: 400, the hub still serves', async () => {
  const r = await f.upgrade(root.issueLeaf({ cn: 'ws-nokey' }), { headers: { 'sec-websocket-key': null } });
  assert.equal(r.status, 400, JSON.stringify({ status: r.status, error: r.error }));
  assert.equal(r.accepted, false);
  await assertHubServes('no Sec-WebSocket-Key');
});

// RFC 6455 §4.2.1: the key is base64 of 16 bytes, else the server MUST answer 400 (Beast only
// checks that it is present and at most 24 characters long; the hub checks the rest).
test('upgrade with a malformed Sec-WebSocket-Key (not 16 bytes of base64): 400', async () => {
  const r = await f.upgrade(root.issueLeaf({ cn: 'ws-badkey' }), { headers: { 'sec-websocket-key': 'short' } });
  assert.equal(r.status, 400, JSON.stringify({ status: r.status, error: r.error }));
  await assertHubServes('bad Sec-WebSocket-Key');
});

test('upgrade with Sec-WebSocket-Version 8: 426 advertising version 13', async () => {
  const r = await f.upgrade(root.issueLeaf({ cn: 'ws-v8' }), { headers: { 'sec-websocket-version': '8' } });
  assert.equal(r.status, 426, JSON.stringify({ status: r.status, error: r.error }));
  assert.equal(r.headers['sec-websocket-version'], '13');
  await assertHubServes('version 8');
});

test('upgrade without Sec-WebSocket-Version: refused with 400 or 426', async () => {
  const r = await f.upgrade(root.issueLeaf({ cn: 'ws-nov' }), { headers: { 'sec-websocket-version': null } });
  assert.ok([400, 426].includes(r.status), JSON.stringify({ status: r.status, error: r.error }));
  assert.equal(r.accepted, false);
  await assertHubServes('no version');
});

test('upgrade with POST instead of GET: 400', async () => {
  const r = await f.upgrade(root.issueLeaf({ cn: 'ws-post' }), { method: 'POST' });
  assert.equal(r.status, 400, JSON.stringify({ status: r.status, error: r.error }));
  await assertHubServes('POST upgrade');
});

test('slowloris: 40 parallel upgrade requests that stall mid-header are all cut at the deadline while devices keep connecting', async () => {
  const leaf = root.issueLeaf({ cn: 'ws-slowloris' });
  const started = Date.now();
  const sockets = await Promise.all(Array.from({ length: 40 }, () => new Promise((resolve, reject) => {
    const s = tls.connect({ host: 'localhost', port: f.hub.devicePort, cert: leaf.chainPem, key: leaf.keyPem, ca: f.serverCa });
    s.on('error', () => {});
    s.closedAt = new Promise((r) => s.on('close', () => r(Date.now())));
    s.once('secureConnect', () => {
      s.write('GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websock');
      resolve(s);
    });
    s.once('close', () => reject(new Error('closed before the TLS handshake finished')));
  })));
  // While they stall, a new device connects and the sentinel is served.
  const fresh = await f.connect(root.issueLeaf({ cn: 'ws-during-slowloris' }));
  assert.ok((await fresh.ping()) >= 0);
  await fresh.close();
  await assertHubServes('during slowloris');
  const closedAt = await Promise.all(sockets.map((s) => s.closedAt));
  const slowest = Math.max(...closedAt) - started;
  assert.ok(slowest < 6000, `every stalled request was cut within ${slowest} ms (deadline 2 s)`);
  await eventually(async () => /reason=upgrade_timeout/.test(f.hub.log()), 'an upgrade_timeout log line');
  await assertHubServes('after slowloris');
});
