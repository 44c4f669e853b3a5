'use strict';
// Benchmark (issue 9, "Speed"): N devices connected to one otahubd, a deployment with
// concurrent_updates 0 switched on, how long until every device has its `update` frame.
// Prints figures; asserts nothing about timings. See README.md.
//
//   OTAHUB_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5513/postgres \
//   OTAHUB_BIN_DIR=/work/main/build/bin bench/rollout_push/run.sh --devices 10000
const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');
const { performance, monitorEventLoopDelay } = require('node:perf_hooks');

const ROOT = path.resolve(__dirname, '..', '..');
const E2E = path.join(ROOT, 'tests', 'e2e');
const WebSocket = require(path.join(E2E, 'node_modules', 'ws'));
const { startHub } = require(path.join(E2E, 'lib', 'hub'));
const { DeviceFixture } = require(path.join(E2E, 'lib', 'device_fixture'));
const { nervesHubLinkJoinPayload } = require(path.join(E2E, 'lib', 'device_client'));
const { BenchCa } = require('./certs');

// ---------------------------------------------------------------------------------------------
// Options
function parseArgs(argv) {
  const opts = {
    devices: 1000,
    concurrency: 200,
    sourceIps: 0, // 0 = one 127.0.0.x per 10,000 devices
    heartbeatS: 30,
    settleMs: 1000,
    deliveryTimeoutMs: 30000,
    dbThreads: 8, // Config defaults (server/app/config.hpp); tests/e2e/lib/hub.js uses 4
    dbPoolSize: 8,
    ioThreads: 2,
    deflate: false,
    renice: null,
    logLevel: 'warn',
    json: null,
  };
  for (let i = 0; i < argv.length; i += 1) {
    const [flag, inline] = argv[i].split('=');
    const value = () => (inline !== undefined ? inline : argv[++i]);
    switch (flag) {
      case '--devices': case '-n': opts.devices = Number(value()); break;
      case '--concurrency': opts.concurrency = Number(value()); break;
      case '--source-ips': opts.sourceIps = Number(value()); break;
      case '--heartbeat': opts.heartbeatS = Number(value()); break;
      case '--settle-ms': opts.settleMs = Number(value()); break;
      case '--timeout-ms': opts.deliveryTimeoutMs = Number(value()); break;
      case '--db-threads': opts.dbThreads = Number(value()); break;
      case '--db-pool-size': opts.dbPoolSize = Number(value()); break;
      case '--io-threads': opts.ioThreads = Number(value()); break;
      case '--deflate': opts.deflate = true; break;
      case '--log-level': opts.logLevel = value(); break;
      case '--renice': opts.renice = Number(value()); break;
      case '--json': opts.json = value(); break;
      case '--help': case '-h':
        console.log(fs.readFileSync(path.join(__dirname, 'README.md'), 'utf8'));
        process.exit(0);
        break;
      default: throw new Error(`unknown option ${argv[i]} (see --help)`);
    }
  }
  if (!(opts.devices > 0)) throw new Error('--devices must be a positive number');
  if (!opts.sourceIps) opts.sourceIps = Math.max(1, Math.ceil(opts.devices / 10000));
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Figures
function quantile(sorted, q) {
  if (!sorted.length) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[idx];
}

function summary(values) {
  const s = Float64Array.from(values).sort();
  return {
    count: s.length,
    min: s[0],
    p50: quantile(s, 0.5),
    p90: quantile(s, 0.9),
    p99: quantile(s, 0.99),
    max: s[s.length - 1],
  };
}

const ms = (v) => (Number.isFinite(v) ? `${v.toFixed(1)} ms` : 'n/a');
const fmt = (s) => `min ${ms(s.min)}  p50 ${ms(s.p50)}  p90 ${ms(s.p90)}  p99 ${ms(s.p99)}  max ${ms(s.max)}  (n=${s.count})`;

function memoryOf(pid) {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key) => Number((text.match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm')) || [])[1]);
  const threads = Number((text.match(/^Threads:\s+(\d+)/m) || [])[1]);
  let fds = NaN;
  try { fds = fs.readdirSync(`/proc/${pid}/fd`).length; } catch (_) { /* not ours to read */ }
  return { rssKiB: kb('VmRSS'), hwmKiB: kb('VmHWM'), threads, fds };
}
/** CPU time (user + system) of a process in ms, from /proc/<pid>/stat. */
function cpuMsOf(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime, stime in USER_HZ=100
}

/** CPU time of every postgres process (the hub's backends included), in ms. */
function postgresCpuMs() {
  let total = 0;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'postgres') continue;
      total += cpuMsOf(entry);
    } catch (_) { /* gone */ }
  }
  return total;
}

/** Sets the nice value of every thread of `pid` (Linux nice is per thread); returns the count. */
function reniceAll(pid, priority) {
  let n = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try { os.setPriority(Number(tid), priority); n += 1; } catch (_) { /* gone or not allowed */ }
  }
  return n;
}

const mib = (kib) => `${(kib / 1024).toFixed(1)} MiB`;
const fmtMem = (m) => `VmRSS ${mib(m.rssKiB)}  VmHWM ${mib(m.hwmKiB)}  threads ${m.threads}  fds ${m.fds}`;

// ---------------------------------------------------------------------------------------------
// One simulated device: TLS websocket, Phoenix V2 join on topic `device`, heartbeats.
class Device {
  constructor(index, leaf, { url, ca, joinPayload, localAddress, deflate }) {
    this.index = index;
    this.leaf = leaf;
    this.url = url;
    this.ca = ca;
    this.joinPayload = joinPayload;
    this.localAddress = localAddress;
    this.deflate = deflate;
    this.ref = 1;
    this.ws = null;
    this.joinedAt = NaN;
    this.startedAt = NaN;
    this.updateAt = NaN;
    this.updates = 0;
    this.updatePayload = null;
    this.closed = null;
  }

  connect(timeoutMs = 60000) {
    this.startedAt = performance.now();
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, {
        cert: this.leaf.certPem,
        key: this.leaf.keyPem,
        ca: this.ca,
        localAddress: this.localAddress,
        perMessageDeflate: this.deflate,
        handshakeTimeout: timeoutMs,
      });
      this.ws = ws;
      let settled = false;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        reject(err);
      };
      ws.on('open', () => {
        ws.send(JSON.stringify(['1', '1', 'device', 'phx_join', this.joinPayload]));
      });
      ws.on('message', (data) => {
        const at = performance.now();
        let frame;
        try { frame = JSON.parse(data.toString()); } catch (_) { return; }
        if (!Array.isArray(frame)) return;
        const [, ref, topic, event, payload] = frame;
        if (event === 'update' && topic === 'device') {
          this.updates += 1;
          if (this.updates === 1) {
            Device.firstUpdates += 1;
            this.updateAt = at;
            this.updatePayload = payload;
          }
        } else if (event === 'phx_reply' && ref === '1' && !settled) {
          settled = true;
          if (payload && payload.status === 'ok') {
            this.joinedAt = at;
            resolve(this);
          } else {
            reject(new Error(`join refused: ${JSON.stringify(payload)}`));
          }
        }
      });
      ws.on('unexpected-response', (_req, res) => fail(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
      ws.on('error', (err) => fail(err));
      ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString(), at: performance.now() };
        fail(new Error(`closed before join: ${code} ${reason}`));
      });
    });
  }

  heartbeat() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ref += 1;
      this.ws.send(JSON.stringify([null, String(this.ref), 'phoenix', 'heartbeat', {}]));
    }
  }
}

Device.firstUpdates = 0;

/** Runs `task(i)` for i in [0, n) with at most `limit` in flight; returns the failures. */
async function bounded(n, limit, task, onProgress) {
  let next = 0;
  let done = 0;
  const failures = [];
  async function lane() {
    while (next < n) {
      const i = next;
      next += 1;
      try {
        await task(i);
      } catch (err) {
        failures.push({ index: i, message: err.message });
      }
      done += 1;
      if (onProgress) onProgress(done);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, n) }, lane));
  return failures;
}

function logExcerpt(log, max = 20) {
  const lines = log.split('\n').filter((l) => /warn|error|critical|fatal/i.test(l));
  return { count: lines.length, lines: lines.slice(0, max) };
}

// ---------------------------------------------------------------------------------------------
async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const N = opts.devices;
  const fixtures = path.join(ROOT, 'tests', 'fixtures', 'fwup');
  const expected = JSON.parse(fs.readFileSync(path.join(fixtures, 'expected.json'), 'utf8'));
  const V1 = expected['demo-1.0.0.fw'].metadata['meta-uuid'];
  const V2 = expected['demo-2.0.0.fw'].metadata['meta-uuid'];
  const result = { date: new Date().toISOString(), options: opts, loadavgAtStart: os.loadavg() };

  console.log(`machine: ${os.cpus().length} cores, loadavg ${os.loadavg().map((v) => v.toFixed(2)).join(' ')}`);
  console.log(`rollout_push: ${N} devices, ${opts.concurrency} connecting at once, ` +
    `${opts.sourceIps} source address(es), hub io_threads=${opts.ioThreads} db_threads=${opts.dbThreads} ` +
    `db_pool_size=${opts.dbPoolSize}, permessage-deflate ${opts.deflate ? 'on' : 'off'}`);

  let t0 = performance.now();
  const ca = new BenchCa();
  const leaves = new Array(N);
  for (let i = 0; i < N; i += 1) leaves[i] = ca.issueLeaf({ cn: `bench-${String(i).padStart(6, '0')}` });
  result.certsMs = performance.now() - t0;
  console.log(`certificates: ${N} device certificates generated in ${ms(result.certsMs)}`);

  const hub = await startHub({
    env: {
      OTAHUB_ROLLOUT_SWEEP_INTERVAL_MS: '600000',
      OTAHUB_LOG_LEVEL: opts.logLevel,
      OTAHUB_IO_THREADS: String(opts.ioThreads),
      OTAHUB_DB_THREADS: String(opts.dbThreads),
      OTAHUB_DB_POOL_SIZE: String(opts.dbPoolSize),
    },
  });
  const devices = [];
  let heartbeatTimer = null;
  let exitCode = 0;
  try {
    const pid = hub.child.pid;
    const token = await hub.login();
    const fx = new DeviceFixture(hub, token, null);
    const api = async (method, urlPath, body, want) => {
      const res = await fx.api(method, urlPath, body);
      if (res.status !== want) throw new Error(`${method} ${urlPath}: ${res.status} ${res.text}`);
      return res.body && res.body.data;
    };
    const base = '/api/orgs/acme/products/demo';
    await api('POST', '/api/orgs/acme/products', { name: 'demo' }, 201);
    const key = fs.readFileSync(path.join(fixtures, 'signing.pub'), 'utf8').trim();
    await api('POST', '/api/orgs/acme/keys', { name: 'release', key }, 201);
    for (const file of ['demo-1.0.0.fw', 'demo-2.0.0.fw']) {
      const res = await hub.request('POST', `${base}/firmwares`, {
        token, raw: fs.readFileSync(path.join(fixtures, file)),
        headers: { 'content-type': 'application/octet-stream' },
      });
      if (res.status !== 201) throw new Error(`upload ${file}: ${res.status} ${res.text}`);
    }
    await fx.registerCa(ca, { jitp: { product_name: 'demo', tags: ['bench'], description: 'bench' } });

    result.memBefore = memoryOf(pid);
    console.log(`hub pid ${pid}, before connections: ${fmtMem(result.memBefore)}`);

    // ---- connect -----------------------------------------------------------------------------
    const url = `wss://localhost:${hub.devicePort}/socket/websocket?vsn=2.0.0`;
    const joinPayload = nervesHubLinkJoinPayload({ uuid: V1, version: '1.0.0', product: 'demo' });
    for (let i = 0; i < N; i += 1) {
      devices.push(new Device(i, leaves[i], {
        url,
        ca: fx.serverCa,
        joinPayload,
        localAddress: opts.sourceIps > 1 ? `127.0.0.${1 + (i % opts.sourceIps)}` : undefined,
        deflate: opts.deflate,
      }));
    }
    // Heartbeats: each device every heartbeatS seconds, spread over the period.
    let tick = 0;
    heartbeatTimer = setInterval(() => {
      tick += 1;
      const slot = tick % opts.heartbeatS;
      for (let i = slot; i < devices.length; i += opts.heartbeatS) devices[i].heartbeat();
    }, 1000);

    let lastPrint = performance.now();
    t0 = performance.now();
    const failures = await bounded(N, opts.concurrency, (i) => devices[i].connect(), (done) => {
      const now = performance.now();
      if (now - lastPrint > 5000) {
        lastPrint = now;
        console.log(`  … ${done}/${N} joined after ${((now - t0) / 1000).toFixed(1)} s`);
      }
    });
    const connectWallMs = performance.now() - t0;
    const joined = devices.filter((d) => Number.isFinite(d.joinedAt));
    result.connect = {
      joined: joined.length,
      failed: failures.length,
      wallMs: connectWallMs,
      perSecond: joined.length / (connectWallMs / 1000),
      perDevice: summary(joined.map((d) => d.joinedAt - d.startedAt)),
    };
    console.log(`connect: ${joined.length}/${N} joined in ${ms(connectWallMs)} ` +
      `(${result.connect.perSecond.toFixed(0)}/s); per device (TLS + upgrade + join reply): ` +
      `${fmt(result.connect.perDevice)}`);
    if (failures.length) {
      const byMessage = {};
      for (const f of failures) byMessage[f.message] = (byMessage[f.message] || 0) + 1;
      result.connect.failures = byMessage;
      console.log('connect failures:', byMessage);
    }
    const early = devices.filter((d) => d.updates > 0).length;
    if (early) console.log(`WARNING: ${early} devices got an update before the deployment existed`);

    // Let join-time evaluations finish before measuring.
    await new Promise((r) => setTimeout(r, opts.settleMs));
    result.memAfterConnect = memoryOf(pid);
    console.log(`hub after ${joined.length} connections: ${fmtMem(result.memAfterConnect)}  ` +
      `(+${mib(result.memAfterConnect.rssKiB - result.memBefore.rssKiB)} RSS, ` +
      `${((result.memAfterConnect.rssKiB - result.memBefore.rssKiB) / Math.max(1, joined.length)).toFixed(1)} KiB per device)`);

    // ---- deploy (inactive), then activate ---------------------------------------------------
    const deployment = await api('POST', `${base}/deployments`, {
      name: 'bench', firmware: V2, is_active: false, concurrent_updates: 0,
      conditions: { version: '~> 1.0', tags: ['bench'] },
    }, 201);
    await new Promise((r) => setTimeout(r, 1000));
    const beforeActivate = devices.filter((d) => d.updates > 0).length;
    if (beforeActivate) console.log(`WARNING: ${beforeActivate} devices got an update from an inactive deployment`);

    // --renice: only for the delivery window, only the processes of this run (otahubd, its
    // PostgreSQL backends, this client), so other work on a shared machine does not skew it.
    let reniced = [];
    if (opts.renice !== null) {
      const { execFileSync } = require('node:child_process');
      const backends = execFileSync('psql', [hub.db.url, '-qAt', '-c',
        `SELECT pid FROM pg_stat_activity WHERE datname = '${hub.db.name}' AND pid <> pg_backend_pid()`])
        .toString().trim().split('\n').filter(Boolean).map(Number);
      reniced = [pid, process.pid, ...backends];
      let threads = 0;
      for (const p of reniced) threads += reniceAll(p, opts.renice);
      console.log(`reniced ${threads} threads of ${reniced.length} processes (otahubd, client, ` +
        `${backends.length} PostgreSQL backends) to ${opts.renice} for the delivery window`);
    }
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    const hubCpu0 = cpuMsOf(pid);
    const pgCpu0 = postgresCpuMs();
    const clientCpu0 = process.cpuUsage();
    const wallAtSend = Date.now();
    loopDelay.enable();
    const sentAt = performance.now();
    const putPromise = fx.api('PUT', `${base}/deployments/bench`, { is_active: true });
    const put = await putPromise;
    const respondedAt = performance.now();
    if (put.status !== 200) throw new Error(`activate: ${put.status} ${put.text}`);
    result.putMs = respondedAt - sentAt;

    const deadline = sentAt + opts.deliveryTimeoutMs;
    while (performance.now() < deadline && Device.firstUpdates < joined.length) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const windowMs = performance.now() - sentAt;
    loopDelay.disable();
    for (const p of reniced) {
      try { reniceAll(p, 0); } catch (_) { /* gone */ }
    }
    const clientCpu = process.cpuUsage(clientCpu0);
    result.cpuDuringDelivery = {
      windowMs,
      hubMs: cpuMsOf(pid) - hubCpu0,
      postgresMs: postgresCpuMs() - pgCpu0,
      clientMs: (clientCpu.user + clientCpu.system) / 1000,
      clientEventLoopDelayMaxMs: loopDelay.max / 1e6,
      clientEventLoopDelayP99Ms: loopDelay.percentile(99) / 1e6,
      loadavg: os.loadavg(),
    };
    const got = joined.filter((d) => d.updates > 0);
    const missing = joined.length - got.length;
    const fromSent = summary(got.map((d) => d.updateAt - sentAt));
    const fromResponse = summary(got.map((d) => d.updateAt - respondedAt));
    const wrong = got.filter((d) => !(d.updatePayload && d.updatePayload.update_available === true &&
      d.updatePayload.firmware_meta && d.updatePayload.firmware_meta.uuid === V2 &&
      d.updatePayload.deployment_id === deployment.id)).length;
    result.delivery = {
      received: got.length, missing, wrongPayload: wrong, fromPutSent: fromSent,
      fromPutResponse: fromResponse, putResponseMs: result.putMs,
      closedDuringRun: joined.filter((d) => d.closed).length,
    };

    // Duplicates show up a little later, if at all.
    await new Promise((r) => setTimeout(r, 500));
    result.delivery.duplicates = got.filter((d) => d.updates > 1).length;
    result.memAfterDelivery = memoryOf(pid);

    console.log('');
    console.log(`activation PUT answered in ${ms(result.putMs)}`);
    console.log(`update frames: ${got.length}/${joined.length} received` +
      `${missing ? `, ${missing} MISSING after ${opts.deliveryTimeoutMs} ms` : ''}` +
      `${wrong ? `, ${wrong} with an unexpected payload` : ''}` +
      `${result.delivery.duplicates ? `, ${result.delivery.duplicates} devices got duplicates` : ''}`);
    console.log(`delivery latency from PUT sent:     ${fmt(fromSent)}`);
    console.log(`delivery latency from PUT response: ${fmt(fromResponse)}`);
    console.log(`last update frame ${ms(fromSent.max)} after the PUT was sent: ` +
      `${fromSent.max <= 1000 && !missing ? 'within' : 'NOT within'} the 1 s target`);
    const c = result.cpuDuringDelivery;
    console.log(`CPU during the ${ms(c.windowMs)} delivery window (2 cores = ${ms(2 * c.windowMs)}): ` +
      `otahubd ${ms(c.hubMs)}, postgres ${ms(c.postgresMs)}, this client ${ms(c.clientMs)}; ` +
      `client event-loop delay p99 ${ms(c.clientEventLoopDelayP99Ms)} max ${ms(c.clientEventLoopDelayMaxMs)}; ` +
      `loadavg ${c.loadavg.map((v) => v.toFixed(2)).join(' ')}`);
    console.log(`hub after delivery: ${fmtMem(result.memAfterDelivery)}`);
    if (opts.logLevel !== 'warn') {
      const sentLines = hub.log().split('\n').filter((l) => /sent firmware/.test(l));
      console.log(`hub "sent firmware" lines (PUT sent at ${new Date(wallAtSend).toISOString()}):`);
      for (const line of sentLines.slice(0, 10)) console.log(`  ${line}`);
    }
    if (result.delivery.closedDuringRun) console.log(`WARNING: ${result.delivery.closedDuringRun} joined devices were closed during the run`);

    const excerpt = logExcerpt(hub.log());
    result.hubLog = excerpt;
    console.log(`hub log: ${excerpt.count} warn/error lines${excerpt.count ? ' (first ones below)' : ''}`);
    for (const line of excerpt.lines) console.log(`  ${line}`);
    if (hub.child.exitCode !== null) {
      console.log(`WARNING: otahubd exited with ${hub.child.exitCode} during the run`);
      exitCode = 1;
    }
    if (missing || failures.length) exitCode = 1;
  } finally {
    if (heartbeatTimer) clearInterval(heartbeatTimer);
    for (const d of devices) if (d.ws) d.ws.terminate();
    const code = await hub.stop();
    if (code !== 0 && code !== null) console.log(`otahubd exit status on SIGTERM: ${code}`);
  }
  if (opts.json) fs.writeFileSync(opts.json, `${JSON.stringify(result, null, 2)}\n`);
  process.exitCode = exitCode;
}

main().catch((err) => {
  console.error(err.stack || err.message);
  process.exit(1);
});
