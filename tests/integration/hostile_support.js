'use strict';
// Helpers for the hostile-input suites: a raw WebSocket over mutual TLS that writes hand-made
// frames and decodes what the hub sends back, and the hub process's resident memory.
const crypto = require('node:crypto');
const fs = require('node:fs');
const tls = require('node:tls');

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/**
 * One client frame. `payload` is a Buffer or string; `mask` (default true) masks it as RFC 6455
 * requires; `rsv` is the 3-bit RSV1..3 field; `length` overrides the declared payload length
 * (a BigInt for 64-bit values) while still writing `payload` as the body.
 */
function frame({ fin = true, rsv = 0, opcode, payload = Buffer.alloc(0), mask = true, length } = {}) {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const declared = length === undefined ? BigInt(body.length) : BigInt(length);
  const parts = [Buffer.from([(fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f)])];
  const maskBit = mask ? 0x80 : 0;
  if (declared < 126n) {
    parts.push(Buffer.from([maskBit | Number(declared)]));
  } else if (declared < 65536n) {
    const b = Buffer.alloc(3);
    b[0] = maskBit | 126;
    b.writeUInt16BE(Number(declared), 1);
    parts.push(b);
  } else {
    const b = Buffer.alloc(9);
    b[0] = maskBit | 127;
    b.writeBigUInt64BE(declared, 1);
    parts.push(b);
  }
  if (mask) {
    const key = crypto.randomBytes(4);
    const masked = Buffer.from(body);
    for (let i = 0; i < masked.length; i += 1) masked[i] ^= key[i % 4];
    parts.push(key, masked);
  } else {
    parts.push(body);
  }
  return Buffer.concat(parts);
}

/** A close frame body: 2-byte code then the reason. */
function closePayload(code, reason = '') {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(code, 0);
  return Buffer.concat([b, Buffer.from(reason)]);
}

/**
 * A raw WebSocket over TLS, upgraded on `path`. Resolves with a RawWs once the hub answered 101,
 * rejects otherwise. Frames from the hub are decoded into `frames` ({fin, opcode, payload});
 * `closed` resolves with {code, reason, frames, ended} when the hub sends a close frame or the
 * connection ends.
 */
function openRawWs({ port, cert, key, ca, path = '/socket/websocket?vsn=2.0.0', timeoutMs = 5000 }) {
  return new Promise((resolve, reject) => {
    const wsKey = crypto.randomBytes(16).toString('base64');
    const socket = tls.connect({ host: 'localhost', port, cert, key, ca, servername: 'localhost' });
    let buffer = Buffer.alloc(0);
    let upgraded = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('upgrade timed out'));
    }, timeoutMs);
    const raw = new RawWs(socket);
    socket.on('secureConnect', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost:${port}\r\nUpgrade: websocket\r\n`
        + `Connection: Upgrade\r\nSec-WebSocket-Key: ${wsKey}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    socket.on('data', (chunk) => {
      if (upgraded) {
        raw._feed(chunk);
        return;
      }
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = buffer.subarray(0, end).toString('latin1');
      const rest = buffer.subarray(end + 4);
      clearTimeout(timer);
      const expected = crypto.createHash('sha1').update(wsKey + WS_GUID).digest('base64');
      if (!/^HTTP\/1\.1 101 /.test(head) || !head.toLowerCase().includes(`sec-websocket-accept: ${expected.toLowerCase()}`)) {
        socket.destroy();
        reject(new Error(`upgrade refused: ${head.split('\r\n')[0]}`));
        return;
      }
      upgraded = true;
      resolve(raw);
      if (rest.length) raw._feed(rest);
    });
    socket.on('error', (err) => {
      if (!upgraded) {
        clearTimeout(timer);
        reject(err);
      }
    });
  });
}

class RawWs {
  constructor(socket) {
    this.socket = socket;
    this.frames = [];
    this._buf = Buffer.alloc(0);
    this._waiters = [];
    this.closeFrame = null;
    this.ended = false;
    this.closed = new Promise((resolve) => { this._resolveClosed = resolve; });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.ended = true;
      this._settle();
    });
  }

  _feed(chunk) {
    this._buf = Buffer.concat([this._buf, chunk]);
    for (;;) {
      const b = this._buf;
      if (b.length < 2) return;
      let len = b[1] & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        offset = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        offset = 10;
      }
      if (b[1] & 0x80) offset += 4; // a server never masks; tolerate it anyway
      if (b.length < offset + len) return;
      const f = { fin: !!(b[0] & 0x80), opcode: b[0] & 0x0f, payload: b.subarray(offset, offset + len) };
      this._buf = b.subarray(offset + len);
      this.frames.push(f);
      if (f.opcode === 8 && !this.closeFrame) {
        this.closeFrame = f;
        this._settle();
      }
      for (const w of this._waiters.splice(0)) w();
    }
  }

  _settle() {
    const f = this.closeFrame;
    this._resolveClosed({
      code: f ? (f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005) : null,
      reason: f && f.payload.length > 2 ? f.payload.subarray(2).toString('utf8') : '',
      ended: this.ended,
      frames: this.frames,
    });
  }

  write(buffer) {
    if (!this.socket.destroyed) this.socket.write(buffer);
  }

  /** Sends a masked text frame. */
  sendText(text) {
    this.write(frame({ opcode: 1, payload: Buffer.from(text) }));
  }

  /** Text frames received so far, decoded as JSON. */
  messages() {
    return this.frames.filter((f) => f.opcode === 1).map((f) => JSON.parse(f.payload.toString('utf8')));
  }

  /** Resolves once `predicate()` holds, re-checked after every frame; rejects after timeoutMs. */
  waitFor(predicate, what, timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
      const check = () => {
        let value;
        try {
          value = predicate();
        } catch (err) {
          clearTimeout(timer);
          reject(err);
          return;
        }
        if (value) {
          clearTimeout(timer);
          resolve(value);
        } else if (this.ended || this.closeFrame) {
          clearTimeout(timer);
          reject(new Error(`connection closed while waiting for ${what}`));
        } else {
          this._waiters.push(check);
        }
      };
      check();
    });
  }

  /** Resolves with the close ({code, reason, ended}) or rejects after timeoutMs. */
  waitClose(timeoutMs = 5000) {
    let timer;
    return Promise.race([
      this.closed.finally(() => clearTimeout(timer)),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no close within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  }

  destroy() {
    this.socket.destroy();
  }
}

/** Resident set size of a process in KiB, from /proc/<pid>/status. */
function rssKiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** True while the process exists and is not a zombie. */
function processAlive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch (_) {
    return false;
  }
}

module.exports = { frame, closePayload, openRawWs, RawWs, rssKiB, processAlive };
