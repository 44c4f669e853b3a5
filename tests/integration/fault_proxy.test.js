'use strict';
// The fault-injection proxy of the database fault tests (tests/e2e/lib/fault_proxy.js) must never
// keep its test process from exiting. Node 20's resetAndDestroy() on a socket whose write side is
// being shut down leaves the handle open for ever and the process spins at exit: that hung
// db_outage in CI after the test itself had passed. Each case runs in a child process, which
// must exit by itself.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawn } = require('node:child_process');

const proxyModule = path.join(__dirname, '..', 'e2e', 'lib', 'fault_proxy.js');

/** Runs `body` (the source of an async function of (FaultProxy, net, connectThrough)) in a child. */
function runChild(body, timeoutMs = 15000) {
  const script = `
    const net = require('node:net');
    const { FaultProxy } = require(${JSON.stringify(proxyModule)});
    (async () => {
      const server = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
      await new Promise((r) => server.listen(0, '127.0.0.1', r));
      server.unref();
      const proxy = await FaultProxy.start('127.0.0.1', server.address().port);
      const connectThrough = () => new Promise((resolve, reject) => {
        const c = net.connect(proxy.port, '127.0.0.1', () => resolve(c));
        c.on('error', () => {});
        c.once('error', reject);
      });
      await (${body})(proxy, net, connectThrough);
      server.close();
      console.log('done');
    })().catch((e) => { console.error(e); process.exit(2); });`;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out });
    });
  });
}

test('stop() after a proxied link began to close: the process still exits', async () => {
  const result = await runChild(`async (proxy, net, connectThrough) => {
    const client = await connectThrough();
    while (proxy.pairs.size === 0) await new Promise((r) => setTimeout(r, 10));
    const [pair] = proxy.pairs;
    pair.client.end();            // the proxy's side starts its shutdown...
    await proxy.stop();           // ...and is reset right after
    client.destroy();
  }`);
  assert.equal(result.signal, null, `the child was killed: it did not exit by itself\n${result.out}`);
  assert.equal(result.code, 0, result.out);
  assert.match(result.out, /done/);
});

test('refuse mode resets live links, the client sees the link die, and the process exits', async () => {
  const result = await runChild(`async (proxy, net, connectThrough) => {
    const client = await connectThrough();
    const echoed = await new Promise((r) => { client.once('data', (d) => r(String(d))); client.write('ping'); });
    if (echoed !== 'ping') throw new Error('no echo through the proxy: ' + echoed);
    const closed = new Promise((r) => client.once('close', r));
    proxy.setMode('refuse');
    await closed;
    // A new link is refused: reset during its connect, or closed at once.
    const refused = await connectThrough().then(
      (c) => new Promise((r) => c.once('close', () => r('closed'))),
      (e) => e.code);
    if (!['closed', 'ECONNRESET'].includes(refused)) throw new Error('a new link was not refused: ' + refused);
    await proxy.stop();
  }`);
  assert.equal(result.signal, null, `the child was killed: it did not exit by itself\n${result.out}`);
  assert.equal(result.code, 0, result.out);
});
