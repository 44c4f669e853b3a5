'use strict';
// A TCP proxy in the test process for fault injection between the hub and PostgreSQL (or any
// TCP service): modes `up` (forward), `refuse` (new connections are closed at once, live ones
// are reset: the service looks down), `reset` (every connection is reset now and on arrival),
// `blackhole` (connections stay open and nothing is delivered either way, new ones are accepted
// but never reach the service: a hung or partitioned link; what was sent is delivered when the
// mode goes back to `up`, as TCP would retransmit it), plus a per-chunk `latency` in
// milliseconds.
const net = require('node:net');

/**
 * Resets `socket` (RST), or destroys it when its write side is already shut down: Node 20's
 * resetAndDestroy() after end() leaves the handle never closed (uv_tcp_close_reset refuses a
 * socket with a shutdown in progress) and the process then spins at exit for ever.
 */
function reset(socket) {
  if (socket.destroyed) return;
  if (socket.writableEnded) socket.destroy();
  else socket.resetAndDestroy();
}

class FaultProxy {
  /** Listens on 127.0.0.1:<free port> and forwards to `targetHost:targetPort`. */
  static async start(targetHost, targetPort) {
    const proxy = new FaultProxy(targetHost, targetPort);
    await new Promise((resolve, reject) => {
      proxy.server.once('error', reject);
      proxy.server.listen(0, '127.0.0.1', resolve);
    });
    proxy.port = proxy.server.address().port;
    return proxy;
  }

  constructor(targetHost, targetPort) {
    this.targetHost = targetHost;
    this.targetPort = targetPort;
    this.mode = 'up';
    this.latencyMs = 0;
    this.pairs = new Set();
    this.held = new Set();
    this.sockets = new Set();  // every accepted socket still open
    this.accepted = 0;
    this.server = net.createServer((client) => this.onConnection(client));
  }

  onConnection(client) {
    this.accepted += 1;
    this.sockets.add(client);
    client.on('close', () => this.sockets.delete(client));
    client.on('error', () => {});
    if (this.mode === 'refuse' || this.mode === 'reset') {
      reset(client);
      return;
    }
    if (this.mode === 'blackhole') {
      client.pause();
      this.held.add(client);
      client.on('close', () => this.held.delete(client));
      return;
    }
    this.forward(client);
  }

  forward(client) {
    const upstream = net.connect(this.targetPort, this.targetHost);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    const pair = { client, upstream };
    this.pairs.add(pair);
    const forget = () => this.pairs.delete(pair);
    client.on('close', () => { upstream.destroy(); forget(); });
    upstream.on('close', () => { client.destroy(); forget(); });
    const relay = (from, to) => {
      from.on('data', (chunk) => {
        if (this.latencyMs > 0) {
          from.pause();
          setTimeout(() => {
            to.write(chunk);
            if (this.mode !== 'blackhole') from.resume();
          }, this.latencyMs);
        } else {
          to.write(chunk);
        }
      });
    };
    relay(client, upstream);
    relay(upstream, client);
    if (this.mode === 'blackhole') {
      client.pause();
      upstream.pause();
    } else {
      client.resume();
    }
  }

  /** Sets the mode: 'up' | 'refuse' | 'reset' | 'blackhole'. `refuse`/`reset` reset live links. */
  setMode(mode) {
    if (!['up', 'refuse', 'reset', 'blackhole'].includes(mode)) throw new Error(`unknown mode ${mode}`);
    this.mode = mode;
    if (mode === 'refuse' || mode === 'reset') {
      for (const { client, upstream } of this.pairs) {
        reset(client);
        upstream.destroy();
      }
      this.pairs.clear();
      for (const client of this.held) reset(client);
      this.held.clear();
    } else if (mode === 'blackhole') {
      // Stop reading both ways: data stays in the socket buffers, nothing is delivered.
      for (const { client, upstream } of this.pairs) {
        client.pause();
        upstream.pause();
      }
    } else {
      for (const { client, upstream } of this.pairs) {
        client.resume();
        upstream.resume();
      }
      const waiting = [...this.held];
      this.held.clear();
      for (const client of waiting) if (!client.destroyed) this.forward(client);
    }
  }

  /** Delays every forwarded chunk by `ms` (0: none). */
  setLatency(ms) {
    this.latencyMs = ms;
  }

  /** Live proxied connections. */
  get connections() {
    return this.pairs.size;
  }

  /** A copy of `url` (a postgresql:// URI) that goes through the proxy. */
  url(url) {
    const u = new URL(url);
    u.hostname = '127.0.0.1';
    u.port = String(this.port);
    return u.toString();
  }

  async stop() {
    this.setMode('reset');
    for (const socket of this.sockets) socket.destroy();
    this.server.unref();
    // close() waits for accepted sockets to end; they were all destroyed above.
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 5000);
      this.server.close(() => { clearTimeout(timer); resolve(); });
    });
  }
}

module.exports = { FaultProxy };
