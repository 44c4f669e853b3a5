'use strict';
// bench/lib/bench.js — run by bench/run (which installs tools, builds the C clients and starts
// PostgreSQL). Runs the anchors (openssl speed, OpenSSL in-process handshake, mosquitto, nginx)
// and the hub scenarios of issue 8, then writes bench/results/<date>.{md,json}.
// Load comes from C clients only (bench/tools/hubload.c, bench/anchors/anchorcli.c, curl).
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { spawn, execFileSync } = require('node:child_process');

const ROOT = path.resolve(__dirname, '..', '..');
const E2E = path.join(ROOT, 'tests', 'e2e');
const { startHub, makeServerCerts } = require(path.join(E2E, 'lib', 'hub'));
const { DeviceFixture } = require(path.join(E2E, 'lib', 'device_fixture'));
const { nervesHubLinkJoinPayload } = require(path.join(E2E, 'lib', 'device_client'));
const { BenchCa } = require(path.join(ROOT, 'bench', 'rollout_push', 'certs'));

// ---------------------------------------------------------------------------------------------
// Options
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const QUICK = args.includes('--quick');
const WORK = path.resolve(opt('--work', path.join(ROOT, 'bench', '.work')));
const ONLY = (opt('--only', '') || '').split(',').filter(Boolean);
const OUT_DIR = path.resolve(opt('--out', path.join(ROOT, 'bench', 'results')));
const P = QUICK
  ? { memN: 1000, jitpN: 600, hsN: 300, fanoutN: 1000, mqttN: 1000, mqttK: 3, nginxHs: 500,
    dlMiB: 16, dlRounds: 1, speedS: 1, hsbenchN: 500, jitter: 2, quietMax: 0 }
  : { memN: 15000, jitpN: 10000, hsN: 3000, fanoutN: 15000, mqttN: 15000, mqttK: 5, nginxHs: 4000,
    dlMiB: 64, dlRounds: 2, speedS: 3, hsbenchN: 4000, jitter: 10, quietMax: 8 };
if (opt('--devices')) {
  P.memN = Number(opt('--devices'));
  P.jitpN = Math.min(P.jitpN, P.memN);
}
// BENCH_DL_ROUNDS=N: each download client fetches the file N times (longer, steadier figures).
if (process.env.BENCH_DL_ROUNDS) P.dlRounds = Number(process.env.BENCH_DL_ROUNDS);
const want = (name) => (ONLY.length === 0 && !['memory', 'handshake'].includes(name)) || ONLY.includes(name);
const HZ = 100;
const ANCH = path.join(WORK, 'anchors');
const BIN = path.join(WORK, 'bin');
fs.mkdirSync(ANCH, { recursive: true });

// ---------------------------------------------------------------------------------------------
// Helpers
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log(`[${new Date().toISOString().slice(11, 19)}]`, ...a);
function procStat(pid) {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2).split(' ');
}
/** CPU seconds (user + system) of `pid`. */
function cpuOf(pid) {
  const f = procStat(pid);
  return (Number(f[11]) + Number(f[12])) / HZ;
}
function statusKiB(pid, key) {
  const t = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number((t.match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm')) || [])[1]);
}
const rssOf = (pid) => statusKiB(pid, 'VmRSS');
const hwmOf = (pid) => statusKiB(pid, 'VmHWM');
/** The malloc a process runs on, from the libraries mapped into it (otahubd links tcmalloc by default). */
function allocatorOf(pid) {
  const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
  const lib = ['tcmalloc', 'jemalloc', 'mimalloc'].find((name) => maps.includes(`lib${name}`));
  return lib || 'glibc';
}
/** Records the hub's allocator in the results' versions (every hub of a run should agree). */
function noteAllocator(R, hub) {
  const name = allocatorOf(hub.child.pid);
  if (R.versions.allocator && R.versions.allocator !== name) R.notes.push(`hubs ran on different allocators: ${R.versions.allocator}, ${name}`);
  R.versions.allocator = name;
}

// CPU used by processes that are not part of this benchmark (the machine may be shared).
const MINE = new Set(['otahubd', 'postgres', 'hubload', 'anchorcli', 'hsbench', 'mosquitto', 'nginx',
  'curl', 'node', 'openssl', 'taskset', 'b2sum', 'zip', 'bash', 'sleep', 'ps', 'psql']);
/** The run's own processes, and the kernel's softirq threads, which on this loopback-only machine
 *  receive the run's own packets when the load is high. */
function mine(comm) { return MINE.has(comm) || comm.startsWith('ksoftirqd/'); }
function cpuByProcess() {
  const m = new Map();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const s = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const comm = s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'));
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      // The start time tells a reused pid from the same process; the name cannot (a kernel
      // worker's name changes with the work it runs: kworker/u8:1-kvfree_rcu_reclaim).
      m.set(e, { comm, ticks: Number(f[11]) + Number(f[12]), start: f[19] });
    } catch (_) { /* gone */ }
  }
  return m;
}
class Foreign {
  constructor() { this.snap = cpuByProcess(); this.t = Date.now(); }
  /** CPU ticks each foreign process name used since construction. */
  ticksByComm() {
    const byComm = new Map();
    for (const [pid, v] of cpuByProcess()) {
      if (mine(v.comm)) continue;
      const before = this.snap.get(pid);
      const d = v.ticks - (before && before.start === v.start ? before.ticks : 0);
      if (d > 0) byComm.set(v.comm, (byComm.get(v.comm) || 0) + d);
    }
    return byComm;
  }
  /** `ticks` as % of one core over the time since construction. */
  pctOf(ticks) { return Math.round((ticks / HZ) / ((Date.now() - this.t) / 1000) * 100); }
  /** Mean % of one core used by foreign processes since construction. */
  pct() { return this.pctOf([...this.ticksByComm().values()].reduce((a, b) => a + b, 0)); }
  /** The foreign processes that used most CPU since construction: "comm 42%, comm 7%". */
  top(n = 3) {
    return [...this.ticksByComm()].sort((a, b) => b[1] - a[1]).slice(0, n)
      .map(([comm, t]) => `${comm} ${this.pctOf(t)}%`).join(', ');
  }
}
/** Notes which foreign processes used the CPU of a step when they used more than 10% of a core. */
function noteForeign(R, step, foreign) {
  const pct = foreign.pct();
  if (pct > 10) R.notes.push(`${step}: foreign CPU ${pct}% of a core (${foreign.top()})`);
  return pct;
}
/** CPU seconds used so far by the live processes named `comm` (e.g. every postgres backend). */
function cpuOfComm(comm) {
  let ticks = 0;
  for (const v of cpuByProcess().values()) if (v.comm === comm) ticks += v.ticks;
  return ticks / HZ;
}
function busyTicks() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { busy: f[0] + f[1] + f[2] + f[5] + f[6] + f[7], total: f.slice(0, 8).reduce((a, b) => a + b, 0) };
}
/** Waits (at most P.quietMax s) for 3 consecutive seconds with the machine < 5% busy. */
async function waitQuiet() {
  let ok = 0;
  let i = 0;
  while (ok < 3 && i < P.quietMax) {
    const a = busyTicks();
    await sleep(1000);
    const b = busyTicks();
    ok = (b.busy - a.busy) * 100 / Math.max(1, b.total - a.total) < 5 ? ok + 1 : 0;
    i += 1;
  }
  return i;
}

/** A child process whose stdout lines can be awaited. */
class Proc {
  constructor(cmd, argv, { cpus, cwd, env } = {}) {
    const full = cpus !== undefined ? ['taskset', ['-c', String(cpus), cmd, ...argv]] : [cmd, argv];
    this.child = spawn(full[0], full[1], { cwd, env: env || process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.lines = [];
    this.err = '';
    this.waiters = [];
    let buf = '';
    this.child.stdout.on('data', (d) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.lines.push(line);
        this.waiters = this.waiters.filter((w) => !w(line));
      }
    });
    this.child.stderr.on('data', (d) => { this.err = (this.err + d.toString()).slice(-4000); });
    this.exited = new Promise((r) => this.child.once('exit', (code) => r(code)));
  }
  get pid() { return this.child.pid; }
  /** Resolves with the first line starting with `prefix` (past or future). */
  line(prefix, timeoutMs = 600000) {
    const seen = this.lines.find((l) => l.startsWith(prefix));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout waiting for "${prefix}"; stderr: ${this.err}`)), timeoutMs);
      this.exited.then((code) => reject(new Error(`exited (${code}) before "${prefix}"; stderr: ${this.err}`)));
      this.waiters.push((l) => {
        if (!l.startsWith(prefix)) return false;
        clearTimeout(timer);
        resolve(l);
        return true;
      });
    });
  }
  async stop(signal = 'SIGTERM') {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}
/** key=value pairs of a result line. */
function kv(line) {
  const o = {};
  for (const m of line.matchAll(/(\w+)=(-?[\d.]+)/g)) o[m[1]] = Number(m[2]);
  return o;
}
function quantile(sorted, q) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] : NaN;
}
const r1 = (v) => (Number.isFinite(v) ? Math.round(v * 10) / 10 : null);
const r2 = (v) => (Number.isFinite(v) ? Math.round(v * 100) / 100 : null);
const r3 = (v) => (Number.isFinite(v) ? Math.round(v * 1000) / 1000 : null);
function version(cmd, argv, re) {
  const { spawnSync } = require('node:child_process');
  const r = spawnSync(cmd, argv, { encoding: 'utf8' });
  const out = `${r.stdout || ''}${r.stderr || ''}`;
  return ((out.match(re) || ['?'])[0] || '?').trim();
}
function freePort() {
  return Number(execFileSync('python3', ['-c',
    'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])']).toString());
}

// ---------------------------------------------------------------------------------------------
// Anchors (method of the 2026-11-23 measurements, bench/anchors/)
function anchorPki() {
  const pki = path.join(ANCH, 'pki');
  if (!fs.existsSync(path.join(pki, 'device.crt'))) {
    execFileSync(path.join(ROOT, 'bench', 'anchors', 'mkcerts.sh'), [pki], { stdio: 'inherit' });
  }
  return pki;
}

async function anchorSpeed(R) {
  log('anchor: openssl speed ecdsap256 ecdhp256');
  const out = execFileSync('openssl', ['speed', '-seconds', String(P.speedS), 'ecdsap256', 'ecdhp256'],
    { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  const m = out.match(/256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)/);
  const e = out.match(/256 bits ecdh \(nistp256\)\s+\S+\s+([\d.]+)/);
  const sign = Number(m[1]);
  const verify = Number(m[2]);
  const ecdh = Number(e[1]);
  const us = (r) => 1e6 / r;
  // keygen ~ one ECDSA sign; + derive + CertificateVerify sign + 2 verifies (anchors/ceiling.py)
  const ceiling = us(sign) + us(ecdh) + us(sign) + 2 * us(verify);
  Object.assign(R.anchors, {
    ecdsa_p256_sign_per_sec: Math.round(sign), ecdsa_p256_verify_per_sec: Math.round(verify),
    ecdh_p256_per_sec: Math.round(ecdh), crypto_ceiling_us: r1(ceiling),
    crypto_ceiling_handshakes_per_sec: Math.round(1e6 / ceiling),
  });
}

async function anchorHsbench(R) {
  log('anchor: OpenSSL in-process handshake loop (hsbench)');
  anchorPki();
  await waitQuiet();
  const out = execFileSync('taskset', ['-c', '1', path.join(BIN, 'hsbench'), String(P.hsbenchN), 'P-256'],
    { cwd: ANCH }).toString();
  const v = kv(out);
  R.anchors.openssl_handshake_server_us = v.server_us_per_hs;
  R.anchors.openssl_handshakes_per_sec = v.server_hs_per_cpu_s;
}

async function anchorMosquitto(R) {
  const pki = anchorPki();
  const port = freePort();
  const conf = path.join(ANCH, 'mosquitto.conf');
  fs.writeFileSync(conf, fs.readFileSync(path.join(ROOT, 'bench', 'anchors', 'mosquitto.conf'), 'utf8')
    .replaceAll('$ANCHORS/pki', pki).replaceAll('listener 8883', `listener ${port}`)
    .replace(/^user root$/m, os.userInfo().uid === 0 ? 'user root' : ''));
  const N = P.mqttN;
  const per = Math.min(5000, N);
  const nproc = Math.ceil(N / per);
  log(`anchor: mosquitto, ${N} mTLS MQTT connections (${nproc} client process(es)), fan-out of ${P.mqttK} publishes`);
  await waitQuiet();
  const foreign = new Foreign();
  const broker = new Proc('mosquitto', ['-c', conf], { cpus: 0 });
  await sleep(1000);
  const rss0 = rssOf(broker.pid);
  const cpu0 = cpuOf(broker.pid);
  const t0 = Date.now();
  const subs = [];
  const dir = fs.mkdtempSync(path.join(ANCH, 'mqtt-'));
  for (let i = 0; i < nproc; i += 1) {
    subs.push(new Proc(path.join(BIN, 'anchorcli'), ['-m', 'sub', '-p', String(port), '-b', `127.0.0.${i + 2}`,
      '-n', String(per), '-c', '32', '-k', String(P.mqttK), '-t', '900', '-x', `p${i}`,
      '-o', path.join(dir, `lat.${i}`)], { cpus: 1, cwd: ANCH }));
  }
  const ready = await Promise.all(subs.map((s) => s.line('READY')));
  const wall = (Date.now() - t0) / 1000;
  const cpu1 = cpuOf(broker.pid);
  await sleep(3000);
  const rss2 = rssOf(broker.pid);
  const pub = new Proc(path.join(BIN, 'anchorcli'), ['-m', 'pub', '-p', String(port), '-k', String(P.mqttK), '-i', '1000'],
    { cpus: 1, cwd: ANCH });
  await pub.exited;
  await Promise.all(subs.map((s) => s.line('DONE', 60000).catch(() => null)));
  for (const s of subs) await s.stop();
  await broker.stop();
  const connected = ready.reduce((a, l) => a + kv(l).n, 0);
  // Per message: the last subscriber's latency; the median over the messages.
  const lastPerSeq = [];
  const p50PerSeq = [];
  const p99PerSeq = [];
  for (let s = 0; s < P.mqttK; s += 1) {
    const v = [];
    for (let i = 0; i < nproc; i += 1) {
      for (const line of fs.readFileSync(path.join(dir, `lat.${i}`), 'utf8').split('\n')) {
        const [seq, ns] = line.split(' ').map(Number);
        if (seq === s && ns >= 0) v.push(ns / 1e6);
      }
    }
    v.sort((a, b) => a - b);
    lastPerSeq.push(v[v.length - 1]);
    p50PerSeq.push(quantile(v, 0.5));
    p99PerSeq.push(quantile(v, 0.99));
  }
  const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  Object.assign(R.anchors, {
    mosquitto_connections: connected,
    mosquitto_bytes_per_connection: Math.round((rss2 - rss0) * 1024 / connected),
    mosquitto_kib_per_connection: r2((rss2 - rss0) / connected),
    mosquitto_connects_per_sec: r1(connected / wall),
    mosquitto_cpu_ms_per_connect: r3((cpu1 - cpu0) * 1000 / connected),
    mosquitto_fanout_p50_ms: r1(med(p50PerSeq)),
    mosquitto_fanout_p99_ms: r1(med(p99PerSeq)),
    mosquitto_fanout_last_ms: r1(med(lastPerSeq)),
    mosquitto_foreign_cpu_pct: noteForeign(R, 'mosquitto', foreign),
  });
  fs.rmSync(dir, { recursive: true, force: true });
}

async function anchorNginx(R) {
  const pki = anchorPki();
  const www = path.join(ANCH, 'www');
  fs.mkdirSync(www, { recursive: true });
  const fw = path.join(www, 'fw.bin');
  if (!fs.existsSync(fw) || fs.statSync(fw).size !== P.dlMiB * 1048576) {
    fs.writeFileSync(fw, crypto.randomBytes(P.dlMiB * 1048576));
  }
  fs.writeFileSync(path.join(www, 'tiny'), 'ok');
  const tmp = path.join(ANCH, 'nginx_tmp');
  fs.mkdirSync(tmp, { recursive: true });
  const port = freePort();
  const conf = path.join(ANCH, 'nginx_run.conf');
  fs.writeFileSync(conf, fs.readFileSync(path.join(ROOT, 'bench', 'anchors', 'nginx.conf'), 'utf8')
    .replace('worker_processes WORKERS', 'worker_processes 1').replaceAll('$ANCHORS', ANCH).replaceAll('127.0.0.1:8443', `127.0.0.1:${port}`)
    .replace(/^user root;$/m, os.userInfo().uid === 0 ? 'user root;' : ''));
  log(`anchor: nginx (1 worker on CPU0): mTLS handshakes, ${P.dlMiB} MiB downloads`);
  const master = new Proc('nginx', ['-p', tmp, '-c', conf], { cpus: 0 });
  await sleep(1000);
  if (master.child.exitCode !== null) throw new Error(`nginx exited: ${master.err}`);
  const workers = execFileSync('ps', ['-o', 'pid=', '--ppid', String(master.pid)]).toString().trim().split(/\s+/).map(Number);
  const wcpu = () => workers.reduce((a, p) => a + cpuOf(p), 0);
  try {
    await waitQuiet();
    let foreign = new Foreign();
    let c0 = wcpu();
    const hs = execFileSync('taskset', ['-c', '1', path.join(BIN, 'anchorcli'), '-m', 'https', '-p', String(port),
      '-n', String(P.nginxHs), '-c', '32', '-P', '/tiny'], { cwd: ANCH }).toString();
    const hsCpu = wcpu() - c0;
    const h = kv(hs);
    R.anchors.nginx_handshakes_per_sec = r1(h.rate_per_s);
    R.anchors.nginx_handshake_cpu_ms = r3(hsCpu * 1000 / h.n_ok);
    R.anchors.nginx_handshake_foreign_cpu_pct = noteForeign(R, 'nginx handshakes', foreign);
    // Resumption anchor: the same GETs asking for session tickets (nginx issues them as the hub
    // does, so this pass is the like-for-like full handshake), then each connection resuming one
    // of those sessions once.
    const sessions = path.join(ANCH, 'nginx_sessions.pem');
    const https = (extra) => kv(execFileSync('taskset', ['-c', '1', path.join(BIN, 'anchorcli'), '-m', 'https',
      '-p', String(port), '-n', String(P.nginxHs), '-c', '32', '-P', '/tiny', ...extra], { cwd: ANCH }).toString());
    await waitQuiet();
    foreign = new Foreign();
    c0 = wcpu();
    const ticketed = https(['-W', sessions]);
    const ticketedCpu = wcpu() - c0;
    R.anchors.nginx_ticket_foreign_cpu_pct = noteForeign(R, 'nginx handshakes with tickets', foreign);
    await waitQuiet();
    foreign = new Foreign();
    c0 = wcpu();
    const resumed = https(['-L', sessions]);
    const resumedCpu = wcpu() - c0;
    R.anchors.nginx_ticket_handshake_cpu_ms = r3(ticketedCpu * 1000 / ticketed.n_ok);
    R.anchors.nginx_resumed_handshake_cpu_ms = r3(resumedCpu * 1000 / resumed.n_ok);
    R.anchors.nginx_resumed_reused = resumed.reused;
    R.anchors.nginx_resumed_speedup = r2((ticketedCpu / ticketed.n_ok) / (resumedCpu / resumed.n_ok));
    R.anchors.nginx_resumed_foreign_cpu_pct = noteForeign(R, 'nginx resumed handshakes', foreign);
    const url = `https://localhost:${port}/fw.bin`;
    const curlArgs = ['--cacert', path.join(pki, 'ca.crt'), '--cert', path.join(pki, 'device.crt'),
      '--key', path.join(pki, 'device.key')];
    for (const clients of [1, 16]) {
      await waitQuiet();
      foreign = new Foreign();
      c0 = wcpu();
      const d = await download(url, curlArgs, clients, roundsFor(clients));
      R.anchors[`nginx_download_mib_per_sec_${clients}`] = d.mibPerSec;
      R.anchors[`nginx_download_cpu_pct_${clients}`] = Math.round((wcpu() - c0) / d.wall * 100);
      R.anchors[`nginx_download_foreign_cpu_pct_${clients}`] = noteForeign(R, `nginx download, ${clients} clients`, foreign);
      if (d.failed) R.notes.push(`nginx download: ${d.failed} of ${clients * roundsFor(clients)} failed`);
    }
  } finally {
    await master.stop('SIGQUIT');
  }
}

/**
 * Downloads per client: every configuration moves as many bytes as 16 clients doing P.dlRounds
 * each (a single client's 2 × 64 MiB took ~0.15 s, too short for its CPU and wall figures).
 */
const roundsFor = (clients) => Math.max(1, Math.round(P.dlRounds * 16 / clients));

/** `clients` parallel curl processes (pinned to CPU1), each downloading `rounds` times (Range 0-). */
async function download(url, extra, clients, rounds) {
  const t0 = Date.now();
  const procs = [];
  for (let j = 0; j < clients; j += 1) {
    const urls = [];
    for (let i = 0; i < rounds; i += 1) urls.push('-o', '/dev/null', url);
    procs.push(new Proc('curl', ['-s', '--noproxy', '*', '--http1.1', '-r', '0-', ...extra, '-w', '%{http_code} %{size_download}\n', ...urls], { cpus: 1 }));
  }
  await Promise.all(procs.map((p) => p.exited));
  const wall = (Date.now() - t0) / 1000;
  let bytes = 0;
  let failed = 0;
  for (const p of procs) {
    for (const line of p.lines) {
      const [code, size] = line.split(' ').map(Number);
      if (code === 206 || code === 200) bytes += size; else failed += 1;
    }
  }
  return { wall, mibPerSec: r1(bytes / 1048576 / wall), failed };
}

// ---------------------------------------------------------------------------------------------
// The hub
const fixtures = path.join(ROOT, 'tests', 'fixtures', 'fwup');
const expected = JSON.parse(fs.readFileSync(path.join(fixtures, 'expected.json'), 'utf8'));
const V1 = expected['demo-1.0.0.fw'].metadata['meta-uuid'];
const V2 = expected['demo-2.0.0.fw'].metadata['meta-uuid'];
const TICKET_KEY = crypto.randomBytes(32).toString('hex');

function hubEnv(extra = {}) {
  return {
    OTAHUB_LOG_LEVEL: 'warn',
    OTAHUB_ROLLOUT_SWEEP_INTERVAL_MS: '600000',
    // BENCH_DB_THREADS / BENCH_DB_POOL: the hub's worker threads and database connections
    // (OTAHUB_DB_THREADS, OTAHUB_DB_POOL_SIZE; 8 each, the hub's defaults), for A/B runs.
    OTAHUB_DB_THREADS: process.env.BENCH_DB_THREADS || '8',
    OTAHUB_DB_POOL_SIZE: process.env.BENCH_DB_POOL || '8',
    // BENCH_IO_THREADS: the hub's I/O threads (OTAHUB_IO_THREADS), for A/B runs.
    OTAHUB_IO_THREADS: process.env.BENCH_IO_THREADS || '2',
    // BENCH_NO_TICKET_KEY=1: for comparing with a build that predates the setting.
    ...(process.env.BENCH_NO_TICKET_KEY ? {} : { OTAHUB_TLS_TICKET_KEY: TICKET_KEY }),
    ...(process.env.BENCH_MALLOC_ARENA_MAX ? { MALLOC_ARENA_MAX: process.env.BENCH_MALLOC_ARENA_MAX } : {}),
    // BENCH_TLS_RECORDS=openssl: device records left to OpenSSL (OTAHUB_DEVICE_TLS_RECORDS), for A/B runs.
    ...(process.env.BENCH_TLS_RECORDS ? { OTAHUB_DEVICE_TLS_RECORDS: process.env.BENCH_TLS_RECORDS } : {}),
    // BENCH_DB_PREPARED=false: every statement unprepared (OTAHUB_DB_PREPARED_STATEMENTS), for A/B runs.
    ...(process.env.BENCH_DB_PREPARED ? { OTAHUB_DB_PREPARED_STATEMENTS: process.env.BENCH_DB_PREPARED } : {}),
    // BENCH_EC_KEYS=provider: EC certificate keys decoded by OpenSSL's providers (OTAHUB_OPENSSL_EC_KEYS), for A/B runs.
    ...(process.env.BENCH_EC_KEYS ? { OTAHUB_OPENSSL_EC_KEYS: process.env.BENCH_EC_KEYS } : {}),
    // BENCH_VERIFY_CACHE=0: every device chain verified in full (OTAHUB_TLS_VERIFY_CACHE), for A/B runs.
    ...(process.env.BENCH_VERIFY_CACHE ? { OTAHUB_TLS_VERIFY_CACHE: process.env.BENCH_VERIFY_CACHE } : {}),
    // BENCH_HUB_PRELOAD=/path/lib.so: loaded into the hub (LD_PRELOAD), e.g. another malloc, for A/B runs.
    ...(process.env.BENCH_HUB_PRELOAD ? { LD_PRELOAD: process.env.BENCH_HUB_PRELOAD } : {}),
    ...extra,
  };
}

/** Product `demo`, its key, firmware 1.0.0 and 2.0.0, and a device CA with a JITP profile. */
async function setupProduct(hub, { ca = new BenchCa(), steady = false } = {}) {
  const token = await hub.login();
  const fx = new DeviceFixture(hub, token, null);
  const api = async (method, urlPath, body, wantStatus) => {
    const res = await fx.api(method, urlPath, body);
    if (res.status !== wantStatus) throw new Error(`${method} ${urlPath}: ${res.status} ${res.text}`);
    return res.body && res.body.data;
  };
  await api('POST', '/api/orgs/acme/products', { name: 'demo' }, 201);
  await api('POST', '/api/orgs/acme/keys', { name: 'release', key: fs.readFileSync(path.join(fixtures, 'signing.pub'), 'utf8').trim() }, 201);
  for (const file of ['demo-1.0.0.fw', 'demo-2.0.0.fw']) {
    const res = await hub.request('POST', '/api/orgs/acme/products/demo/firmwares', {
      token, raw: fs.readFileSync(path.join(fixtures, file)), headers: { 'content-type': 'application/octet-stream' },
    });
    if (res.status !== 201) throw new Error(`upload ${file}: ${res.status} ${res.text}`);
  }
  await fx.registerCa(ca, { jitp: { product_name: 'demo', tags: ['bench'], description: 'bench' } });
  const dir = scratchDir('devca-');
  fs.writeFileSync(path.join(dir, 'devca.crt'), ca.certPem);
  fs.writeFileSync(path.join(dir, 'devca.key'), ca.key.export({ type: 'pkcs8', format: 'pem' }));
  fs.writeFileSync(path.join(dir, 'join.json'), JSON.stringify(nervesHubLinkJoinPayload({ uuid: V1, version: '1.0.0', product: 'demo' })));
  if (steady) {
    // A fleet at rest: an active deployment ships the firmware the devices already run, so every
    // join is resolved against it and finds nothing to send.
    await api('POST', '/api/orgs/acme/products/demo/deployments', {
      name: 'steady', firmware: V1, is_active: true, conditions: { version: '>= 0.0.0', tags: ['bench'] },
    }, 201);
  }
  return { token, fx, api, ca, dir };
}

/** A directory under WORK for this run only: removed when the process exits, however it ends. */
const scratch = [];
function scratchDir(prefix) {
  const dir = fs.mkdtempSync(path.join(WORK, prefix));
  scratch.push(dir);
  return dir;
}
process.on('exit', () => {
  for (const dir of scratch) fs.rmSync(dir, { recursive: true, force: true });
});

function hubload(hub, setup, mode, { n, prefix, binds = ['127.0.0.2'], conc = 128, extra = [], cpus = 1, port } = {}) {
  const argv = ['-m', mode, '-p', String(port || hub.devicePort), '-A', hub.certs.ca,
    '-a', path.join(setup.dir, 'devca.crt'), '-k', path.join(setup.dir, 'devca.key'),
    '-J', path.join(setup.dir, 'join.json'), '-n', String(n), '-c', String(conc), '-x', prefix,
    '-j', String(P.jitter), ...binds.flatMap((b) => ['-b', b]),
    // The load client decodes the hub's certificates with OpenSSL's built-in EC method (-E), as
    // the hub does: less of the shared machine goes to the client. BENCH_CLIENT_EC_KEYS=provider
    // leaves it to OpenSSL's providers, for A/B runs.
    ...(process.env.BENCH_CLIENT_EC_KEYS === 'provider' ? [] : ['-E']), ...extra];
  return new Proc(path.join(BIN, 'hubload'), argv, { cpus });
}

async function restartHub(hub, env) {
  await hub.stop({ keepDatabase: true, signal: 'SIGKILL' });
  return startHub({
    certs: hub.certs, database: hub.db, admin: null,
    env: { ...env, OTAHUB_SECRET_KEY: hub.env.OTAHUB_SECRET_KEY },
  });
}

/**
 * Full and resumed handshakes (connect, upgrade, join, close) of existing devices, hub pinned to
 * CPU0. BENCH_PERF=FILE records the hub with `perf record -g` during them.
 */
async function handshakes(R, hub, setup) {
  const hsN = P.hsN;
  log(`hub: ${hsN} devices: provisioning pass, then ${hsN} full and ${hsN} resumed handshakes (connect, upgrade, join, close), hub on CPU0`);
  execFileSync('taskset', ['-a', '-p', '-c', '0', String(hub.child.pid)], { stdio: 'ignore' });
  await waitQuiet();
  const foreign = new Foreign();
  const cpu0 = cpuOf(hub.child.pid);
  const churn = hubload(hub, setup, 'churn', { n: hsN, prefix: 'hs', binds: ['127.0.0.6'], conc: 32, extra: ['-R', '-H', String(hub.child.pid)] });
  let perf = null;
  const warmup = kv(await churn.line('WARMUP', 600000));
  const pgWarm = cpuOfComm('postgres');
  if (process.env.BENCH_PERF) {
    perf = spawn('perf', ['record', '-F', '999', ...(process.env.BENCH_PERF_CALLGRAPH ? ['--call-graph', process.env.BENCH_PERF_CALLGRAPH] : ['-g']), '-o', process.env.BENCH_PERF, '-p', String(hub.child.pid)], { stdio: 'ignore' });
  }
  const full = kv(await churn.line('FULL', 600000));
  const pgFull = cpuOfComm('postgres');
  const resumed = kv(await churn.line('RESUMED', 600000));
  const pgResumed = cpuOfComm('postgres');
  await churn.exited;
  if (perf) {
    perf.kill('SIGINT');
    await new Promise((resolve) => perf.on('exit', resolve));
    log(`hub: perf data in ${process.env.BENCH_PERF}`);
  }
  R.hub.handshakes = full.joined;
  R.hub.handshake_failed = full.fail + resumed.fail;
  R.hub.handshake_cpu_ms = r3(full.hub_cpu_s * 1000 / full.joined);
  R.hub.handshakes_per_sec_per_core = r1(full.joined / full.hub_cpu_s);
  R.hub.handshakes_per_sec_wall = r1(full.rate_per_s);
  R.hub.resumed_handshakes = resumed.reused;
  R.hub.resumed_handshake_cpu_ms = r3(resumed.hub_cpu_s * 1000 / resumed.joined);
  R.hub.resumed_per_sec_per_core = r1(resumed.joined / resumed.hub_cpu_s);
  R.hub.resumed_per_sec_wall = r1(resumed.rate_per_s);
  R.hub.resumed_speedup = r2(R.hub.resumed_per_sec_per_core / R.hub.handshakes_per_sec_per_core);
  R.hub.resumed_speedup_wall = r2(resumed.rate_per_s / full.rate_per_s);
  // Thread switches of all hub threads per connection (each hand-off between an I/O thread and a
  // database worker costs two or more).
  R.hub.handshake_context_switches = r1(full.hub_csw / full.joined);
  R.hub.resumed_context_switches = r1(resumed.hub_csw / resumed.joined);
  // The load client's CPU per connection (its client_cpu_s is cumulative).
  R.hub.handshake_client_cpu_ms = r3((full.client_cpu_s - warmup.client_cpu_s) * 1000 / full.joined);
  // PostgreSQL's CPU per connection (check and open, join, close), full and resumed passes.
  R.hub.handshake_postgres_cpu_ms = r3((pgFull - pgWarm) * 1000 / full.joined);
  R.hub.resumed_postgres_cpu_ms = r3((pgResumed - pgFull) * 1000 / resumed.joined);
  R.hub.resumed_client_cpu_ms = r3((resumed.client_cpu_s - full.client_cpu_s) * 1000 / resumed.joined);
  R.hub.handshake_foreign_cpu_pct = noteForeign(R, 'handshake step', foreign);
  if (cpu0 < 0) R.notes.push('hub CPU unreadable');
}

/** Memory per device, JITP storm, reconnect storm and handshake cost, on one hub process. */
async function hubScenarios(R, { memoryOnly = false, handshakeOnly = false } = {}) {
  const port = freePort();
  const env = hubEnv({ OTAHUB_DEVICE_LISTEN: `127.0.0.1:${port}`, OTAHUB_NODE_ID: 'bench-a' });
  // Server certificates outside the hub's own directory, which stop() deletes: they outlive restarts.
  const certs = makeServerCerts(scratchDir('certs-'));
  let hub = await startHub({ env, certs });
  noteAllocator(R, hub);
  // BENCH_STEADY=0: no deployment at all (before 2026-12-05 the hub scenarios ran without one).
  const steady = process.env.BENCH_STEADY !== '0';
  R.hub.steady_deployment = steady;
  const setup = await setupProduct(hub, { steady });
  const loads = [];
  try {
    await sleep(1000);
    if (process.env.BENCH_PAUSE_BEFORE) {
      log(`hub pid ${hub.child.pid}: pausing ${process.env.BENCH_PAUSE_BEFORE} s before connecting`);
      await sleep(Number(process.env.BENCH_PAUSE_BEFORE) * 1000);
    }
    const rss0 = rssOf(hub.child.pid);
    R.hub.rss_idle_kib = rss0;
    if (handshakeOnly) {
      await handshakes(R, hub, setup);
      return;
    }

    // JITP storm: never-seen devices at once (128 handshakes in flight).
    log(`hub: JITP storm, ${P.jitpN} new devices`);
    await waitQuiet();
    let foreign = new Foreign();
    let cpu0 = cpuOf(hub.child.pid);
    const pg0 = cpuOfComm('postgres');
    // BENCH_JITP_CONC: handshakes the load client keeps in flight in the storm (128), for A/B runs.
    const jitp = hubload(hub, setup, 'hold', {
      n: P.jitpN, prefix: 'jitp', binds: ['127.0.0.2'], conc: Number(process.env.BENCH_JITP_CONC || 128),
    });
    loads.push(jitp);
    const jr = kv(await jitp.line('READY', 900000));
    R.hub.jitp_devices = jr.joined;
    R.hub.jitp_failed = jr.fail;
    R.hub.jitp_s = r2(jr.elapsed_s);
    R.hub.jitp_devices_per_sec = r1(jr.joined / jr.elapsed_s);
    R.hub.jitp_hub_cpu_ms_per_device = r3((cpuOf(hub.child.pid) - cpu0) * 1000 / jr.joined);
    // Where the rest of the two cores went: PostgreSQL and the load client (keys, certificates,
    // client handshakes) share the machine with the hub.
    R.hub.jitp_postgres_cpu_ms_per_device = r3((cpuOfComm('postgres') - pg0) * 1000 / jr.joined);
    // From its first connection on: making the devices' certificates came before (~0.1 ms each).
    const jc = kv(await jitp.line('CERTS', 1000));
    R.hub.jitp_client_cpu_ms_per_device = r3((jr.client_cpu_s - jc.client_cpu_s) * 1000 / jr.joined);
    R.hub.jitp_foreign_cpu_pct = noteForeign(R, 'JITP storm', foreign);

    // More devices up to memN, then RSS per device.
    const more = P.memN - P.jitpN;
    if (more > 0) {
      log(`hub: ${more} more devices (total ${P.memN})`);
      const rest = hubload(hub, setup, 'hold', { n: more, prefix: 'mem', binds: ['127.0.0.3'] });
      loads.push(rest);
      const mr = kv(await rest.line('READY', 900000));
      if (mr.fail) R.notes.push(`memory scenario: ${mr.fail} devices failed to join`);
    }
    await sleep(5000); // heartbeats flowing, join-time work done
    const rss1 = rssOf(hub.child.pid);
    const joined = loads.reduce((a, l) => a + kv(l.lines.find((x) => x.startsWith('READY'))).joined, 0);
    R.hub.memory_devices = joined;
    R.hub.rss_loaded_kib = rss1;
    R.hub.memory_per_device_kib = r2((rss1 - rss0) / joined);
    R.hub.fds = fs.readdirSync(`/proc/${hub.child.pid}/fd`).length;
    log(`hub: ${joined} devices: RSS ${rss0} → ${rss1} KiB = ${R.hub.memory_per_device_kib} KiB per device`);
    if (memoryOnly) {
      // BENCH_PAUSE=S: keep the devices connected S seconds more (to inspect the hub by hand).
      if (process.env.BENCH_PAUSE) {
        log(`hub pid ${hub.child.pid}: pausing ${process.env.BENCH_PAUSE} s`);
        await sleep(Number(process.env.BENCH_PAUSE) * 1000);
      }
      return;
    }

    // Reconnect storm: the node restarts (crash), devices come back with jittered reconnects and
    // resume their TLS sessions (same ticket key).
    log(`hub: reconnect storm (restart with ${joined} devices, jitter ${P.jitter} s)`);
    const tRestart = Date.now();
    hub = await restartHub(hub, env);
    const rejoined = await Promise.all(loads.map((l) => l.line('REJOINED', 900000)));
    for (const line of rejoined) log(`  ${line}`);
    const storm = rejoined.map(kv);
    R.hub.reconnect_storm_s = r2(Math.max(...storm.map((s) => s.elapsed_s)));
    R.hub.reconnect_storm_wall_s = r2((Date.now() - tRestart) / 1000);
    R.hub.reconnect_resumed = storm.reduce((a, s) => a + s.reused, 0);
    R.hub.reconnect_devices = storm.reduce((a, s) => a + s.joined, 0);
    R.hub.reconnect_peak_rss_mib = r1(hwmOf(hub.child.pid) / 1024);
    for (const l of loads) await l.stop();
    loads.length = 0;
    await sleep(2000);

    await handshakes(R, hub, setup);
  } finally {
    for (const l of loads) await l.stop();
    await hub.stop();
  }
}

/** One deployment activation reaching fanoutN devices held by two hub processes (SO_REUSEPORT). */
async function fanoutScenario(R) {
  const port = freePort();
  const env = hubEnv({ OTAHUB_DEVICE_LISTEN: `127.0.0.1:${port}`, OTAHUB_REUSE_PORT: 'true' });
  const certs = makeServerCerts(scratchDir('certs-'));
  const a = await startHub({ certs, env: { ...env, OTAHUB_NODE_ID: 'fan-a' } });
  const b = await startHub({
    certs: a.certs, database: a.db, admin: null,
    env: { ...env, OTAHUB_NODE_ID: 'fan-b', OTAHUB_SECRET_KEY: a.env.OTAHUB_SECRET_KEY },
  });
  let load;
  try {
    const setup = await setupProduct(a);
    const fxB = new DeviceFixture(b, setup.token, null);
    await fxB.waitForTrust(setup.ca, true);
    log(`hub: push fan-out, ${P.fanoutN} devices over two hub processes`);
    const updates = path.join(setup.dir, 'updates.txt');
    load = hubload(a, setup, 'hold', { n: P.fanoutN, prefix: 'fan', binds: ['127.0.0.4', '127.0.0.5'], extra: ['-o', updates] });
    const ready = kv(await load.line('READY', 900000));
    R.hub.fanout_devices = ready.joined;
    R.hub.fanout_split = [a, b].map((h) => fs.readdirSync(`/proc/${h.child.pid}/fd`).length);
    await setup.api('POST', '/api/orgs/acme/products/demo/deployments', {
      name: 'bench', firmware: V2, is_active: false, concurrent_updates: 0,
      conditions: { version: '~> 1.0', tags: ['bench'] },
    }, 201);
    await sleep(2000);
    await waitQuiet();
    const foreign = new Foreign();
    const sentNs = BigInt(Date.now()) * 1000000n;
    const res = await setup.fx.api('PUT', '/api/orgs/acme/products/demo/deployments/bench', { is_active: true });
    if (res.status !== 200) throw new Error(`activate: ${res.status} ${res.text}`);
    await load.line('UPDATED', 60000).catch(() => null);
    await load.stop();
    const lat = fs.existsSync(updates)
      ? fs.readFileSync(updates, 'utf8').split('\n').filter(Boolean).map((v) => Number(BigInt(v) - sentNs) / 1e6).sort((x, y) => x - y)
      : [];
    R.hub.fanout_received = lat.length;
    R.hub.fanout_p50_ms = r1(quantile(lat, 0.5));
    R.hub.fanout_p99_ms = r1(quantile(lat, 0.99));
    R.hub.fanout_last_ms = r1(lat[lat.length - 1]);
    R.hub.fanout_foreign_cpu_pct = noteForeign(R, 'fan-out', foreign);
  } finally {
    if (load) await load.stop();
    await b.stop({ keepDatabase: true });
    await a.stop();
  }
}

/** A `mib` MiB signed fwup archive (product demo) built like tests/fixtures/fwup/README.md says. */
function bigFirmware(mib) {
  const dir = fs.mkdtempSync(path.join(WORK, 'fw-'));
  fs.mkdirSync(path.join(dir, 'data'));
  const data = path.join(dir, 'data', 'rootfs.img');
  fs.writeFileSync(data, crypto.randomBytes(mib * 1048576));
  const blake = execFileSync('b2sum', ['-l', '256', data]).toString().split(' ')[0];
  const meta = 'meta-product="demo"\nmeta-description="bench"\nmeta-version="9.0.0"\nmeta-author="bench"\n' +
    'meta-platform="rpi4"\nmeta-architecture="aarch64"\nmeta-vcs-identifier=""\nmeta-misc=""\n' +
    `file-resource "rootfs.img" {\n  length=${mib * 1048576}\n  blake2b-256="${blake}"\n}\n`;
  fs.writeFileSync(path.join(dir, 'meta.conf'), meta);
  const raw = Buffer.from(fs.readFileSync(path.join(fixtures, 'signing.priv'), 'utf8').trim(), 'base64');
  const key = crypto.createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: raw.subarray(0, 32).toString('base64url'), x: raw.subarray(32).toString('base64url') }, format: 'jwk' });
  fs.writeFileSync(path.join(dir, 'meta.conf.ed25519'), crypto.sign(null, Buffer.from(meta), key));
  execFileSync('zip', ['-0', '-X', '-q', 'bench.fw', 'meta.conf.ed25519', 'meta.conf', 'data/rootfs.img'], { cwd: dir });
  return { dir, file: path.join(dir, 'bench.fw') };
}

async function downloadScenario(R) {
  const hub = await startHub({ apiTls: true, env: hubEnv({ OTAHUB_API_BODY_LIMIT: String(2 ** 30) }) });
  noteAllocator(R, hub);
  let fw;
  try {
    const setup = await setupProduct(hub);
    fw = bigFirmware(P.dlMiB);
    const res = await hub.request('POST', '/api/orgs/acme/products/demo/firmwares', {
      token: setup.token, raw: fs.readFileSync(fw.file), headers: { 'content-type': 'application/octet-stream' },
    });
    if (res.status !== 201) throw new Error(`upload bench.fw: ${res.status} ${res.text}`);
    const uuid = res.body.data.uuid;
    const url = `${hub.apiUrl}/api/orgs/acme/products/demo/firmwares/${uuid}/download`;
    execFileSync('taskset', ['-a', '-p', '-c', '0', String(hub.child.pid)], { stdio: 'ignore' });
    log(`hub: firmware download, ${(fs.statSync(fw.file).size / 1048576).toFixed(1)} MiB, 1 and 16 clients`);
    const extra = ['--cacert', hub.certs.ca, '-H', `authorization: Bearer ${setup.token}`];
    for (const clients of [1, 16]) {
      await waitQuiet();
      const foreign = new Foreign();
      const c0 = cpuOf(hub.child.pid);
      const d = await download(url, extra, clients, roundsFor(clients));
      R.hub[`download_mib_per_sec_${clients}`] = d.mibPerSec;
      const hubCpu = cpuOf(hub.child.pid) - c0;
      R.hub[`download_hub_cpu_pct_${clients}`] = Math.round(hubCpu / d.wall * 100);
      R.hub[`download_hub_cpu_s_per_gib_${clients}`] = r3(hubCpu / (d.mibPerSec * d.wall / 1024));
      R.hub[`download_foreign_cpu_pct_${clients}`] = noteForeign(R, `hub download, ${clients} clients`, foreign);
      if (d.failed) R.notes.push(`hub download: ${d.failed} of ${clients * roundsFor(clients)} failed`);
    }
  } finally {
    await hub.stop();
    if (fw) fs.rmSync(fw.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
function ratio(a, b) { return Number.isFinite(a) && Number.isFinite(b) && b ? r2(a / b) : null; }

function flatten(R) {
  const h = R.hub;
  const a = R.anchors;
  return {
    memory_per_device_kib: h.memory_per_device_kib,
    handshake_cpu_ms: h.handshake_cpu_ms,
    handshakes_per_sec_per_core: h.handshakes_per_sec_per_core,
    resumed_speedup: h.resumed_speedup,
    jitp_devices_per_sec: h.jitp_devices_per_sec,
    fanout_last_ms: h.fanout_last_ms,
    fanout_ratio_vs_mosquitto: ratio(h.fanout_last_ms, a.mosquitto_fanout_last_ms),
    download_mib_per_sec_16: h.download_mib_per_sec_16,
    download_ratio_vs_nginx: ratio(h.download_mib_per_sec_16, a.nginx_download_mib_per_sec_16),
    reconnect_storm_s: h.reconnect_storm_s,
    memory_ratio_vs_mosquitto: ratio(h.memory_per_device_kib, a.mosquitto_kib_per_connection),
    handshake_ratio_vs_nginx: ratio(h.handshake_cpu_ms, a.nginx_handshake_cpu_ms),
    handshake_ratio_vs_openssl: ratio(h.handshake_cpu_ms, a.openssl_handshake_server_us / 1000),
    ...Object.fromEntries(Object.entries(h).filter(([k]) => !['memory_per_device_kib', 'handshake_cpu_ms',
      'handshakes_per_sec_per_core', 'resumed_speedup', 'jitp_devices_per_sec', 'fanout_last_ms',
      'download_mib_per_sec_16', 'reconnect_storm_s'].includes(k)).map(([k, v]) => [`hub_${k}`, v])),
    ...Object.fromEntries(Object.entries(a).map(([k, v]) => [`anchor_${k}`, v])),
  };
}

function markdown(R, F) {
  const f = (v, d = 1) => (v === null || v === undefined ? 'n/a' : typeof v === 'number' ? v.toLocaleString('en-US', { maximumFractionDigits: d }) : String(v));
  const a = R.anchors;
  const h = R.hub;
  const rows = [
    ['Memory per connected device (RSS delta / devices)', `${f(h.memory_per_device_kib, 2)} KiB (${f(h.memory_devices, 0)} devices)`,
      `mosquitto ${f(a.mosquitto_kib_per_connection, 2)} KiB (${f(a.mosquitto_connections, 0)} conns)`, f(F.memory_ratio_vs_mosquitto, 2), '≤ 16 KiB'],
    ['Full mTLS handshake + upgrade + join, hub CPU', `${f(h.handshake_cpu_ms, 3)} ms (${f(h.handshakes_per_sec_per_core, 0)}/s per core; ${f(h.handshakes_per_sec_wall, 0)}/s wall)`,
      `nginx ${f(a.nginx_handshake_cpu_ms, 3)} ms · mosquitto ${f(a.mosquitto_cpu_ms_per_connect, 3)} ms · OpenSSL floor ${f(a.openssl_handshake_server_us / 1000, 3)} ms · crypto ${f(a.crypto_ceiling_us / 1000, 3)} ms`,
      `${f(F.handshake_ratio_vs_nginx, 2)} × nginx`, '≤ 0.7 ms, ≥ 1,400/s'],
    ['Resumed handshake (TLS ticket), hub CPU', `${f(h.resumed_handshake_cpu_ms, 3)} ms (${f(h.resumed_per_sec_per_core, 0)}/s per core; ${f(h.resumed_handshakes, 0)} resumed)`,
      `full handshake above · nginx resumed ${f(a.nginx_resumed_handshake_cpu_ms, 3)} ms, ${f(a.nginx_resumed_speedup, 2)}× its full with tickets (${f(a.nginx_ticket_handshake_cpu_ms, 3)} ms; ${f(a.nginx_resumed_reused, 0)} resumed)`,
      `${f(h.resumed_speedup, 2)}× full (wall ${f(h.resumed_speedup_wall, 2)}×)`, '≥ 3×'],
    ['JITP storm', `${f(h.jitp_devices, 0)} new devices in ${f(h.jitp_s, 2)} s = ${f(h.jitp_devices_per_sec, 0)}/s`,
      'AWS IoT historical limit 300/s', ratio(h.jitp_devices_per_sec, 300) ? `${f(ratio(h.jitp_devices_per_sec, 300), 2)} × 300/s` : 'n/a', '≥ 1,000/s'],
    ['Push fan-out, last `update` frame', `${f(h.fanout_last_ms)} ms (p50 ${f(h.fanout_p50_ms)}, p99 ${f(h.fanout_p99_ms)}; ${f(h.fanout_received, 0)}/${f(h.fanout_devices, 0)} devices, 2 hub processes)`,
      `mosquitto ${f(a.mosquitto_fanout_last_ms)} ms (p50 ${f(a.mosquitto_fanout_p50_ms)})`, f(F.fanout_ratio_vs_mosquitto, 2), '≤ 1.5× and ≤ 1,000 ms'],
    ['Firmware download, 16 clients (TLS, Range 0-)', `${f(h.download_mib_per_sec_16, 0)} MiB/s (hub ${f(h.download_hub_cpu_pct_16, 0)}% CPU)`,
      `nginx ${f(a.nginx_download_mib_per_sec_16, 0)} MiB/s (${f(a.nginx_download_cpu_pct_16, 0)}% CPU)`, f(F.download_ratio_vs_nginx, 2), '≥ 0.9×'],
    ['Firmware download, 1 client', `${f(h.download_mib_per_sec_1, 0)} MiB/s`, `nginx ${f(a.nginx_download_mib_per_sec_1, 0)} MiB/s`,
      f(ratio(h.download_mib_per_sec_1, a.nginx_download_mib_per_sec_1), 2), ''],
    ['Reconnect storm (node restart)', `${f(h.reconnect_devices, 0)} devices joined again in ${f(h.reconnect_storm_s, 2)} s (${f(h.reconnect_resumed, 0)} resumed TLS sessions; peak RSS ${f(h.reconnect_peak_rss_mib)} MiB)`,
      `jitter 0–${P.jitter} s per device`, '', ''],
  ];
  const lines = [];
  lines.push(`# otahub benchmark, ${R.date}${QUICK ? ' (--quick: small N, indicative only)' : ''}`, '');
  lines.push(`Machine: ${R.machine.cores} × ${R.machine.cpu}, ${R.machine.memGiB} GiB RAM, kernel ${R.machine.kernel}, fd limit ${R.machine.nofile}.`);
  lines.push(`Versions: otahub ${R.versions.otahub} (malloc: ${R.versions.allocator || 'n/a'}); ${R.versions.openssl}; ${R.versions.mosquitto}; ${R.versions.nginx}; ${R.versions.postgres}.`);
  lines.push(`Load average at start: ${R.machine.loadavgStart.join(' ')}; at end: ${R.machine.loadavgEnd.join(' ')}.`);
  if (h.steady_deployment !== undefined) {
    lines.push(h.steady_deployment
      ? 'Fleet: an active deployment of the firmware the devices run (each join resolved against it).'
      : 'Fleet: no deployment (`BENCH_STEADY=0`).');
  }
  if (R.shared) lines.push('', `**The machine was shared during this run**: other processes used CPU (foreign CPU % of one core per step is in the JSON, \`*_foreign_cpu_pct\`). Wall-clock rates are pessimistic; CPU-per-operation figures are not affected much.`);
  lines.push('', '| figure | hub | anchor (same run) | ratio | target |', '|---|---|---|---|---|');
  for (const r of rows) lines.push(`| ${r.join(' | ')} |`);
  lines.push('', 'Raw anchor figures: ' + Object.entries(a).map(([k, v]) => `${k}=${v}`).join(', ') + '.');
  if (R.notes.length) lines.push('', 'Notes:', ...R.notes.map((n) => `- ${n}`));
  lines.push('', 'Method: bench/README.md. Reproduce with `bench/run` (or `bench/run --quick`).', '');
  return lines.join('\n');
}

async function main() {
  const R = {
    date: new Date().toISOString(),
    quick: QUICK,
    machine: {
      cores: os.cpus().length, cpu: os.cpus()[0].model, memGiB: Math.round(os.totalmem() / 2 ** 30),
      kernel: os.release(), nofile: execFileSync('bash', ['-c', 'ulimit -n']).toString().trim(), loadavgStart: os.loadavg().map(r2),
    },
    versions: {
      otahub: version('git', ['-C', ROOT, 'describe', '--always', '--dirty'], /.+/),
      openssl: version('openssl', ['version'], /OpenSSL \S+/),
      mosquitto: version('mosquitto', ['-h'], /mosquitto version \S+/),
      nginx: version('nginx', ['-v'], /nginx\/\S+/),
      postgres: `PostgreSQL ${version('bash', ['-c', 'for p in /usr/lib/postgresql/*/bin/postgres; do "$p" --version; done 2>/dev/null | tail -1'], /\d+\.\d+/)}`,
    },
    anchors: {},
    hub: {},
    notes: [],
  };
  const foreign = new Foreign();
  const steps = [
    ['speed', anchorSpeed], ['hsbench', anchorHsbench], ['mosquitto', anchorMosquitto], ['nginx', anchorNginx],
    ['hub', hubScenarios], ['memory', (R) => hubScenarios(R, { memoryOnly: true })],
    ['handshake', (R) => hubScenarios(R, { handshakeOnly: true })], ['fanout', fanoutScenario], ['download', downloadScenario],
  ];
  for (const [name, fn] of steps) {
    if (!want(name)) continue;
    try {
      await fn(R);
    } catch (e) {
      R.notes.push(`${name} failed: ${e.message.split('\n')[0]}`);
      log(`${name} FAILED: ${e.stack}`);
    }
  }
  R.machine.loadavgEnd = os.loadavg().map(r2);
  R.foreign_cpu_pct_mean = foreign.pct();
  R.shared = R.foreign_cpu_pct_mean > 10 ||
    Object.entries({ ...R.hub, ...R.anchors }).some(([k, v]) => k.endsWith('foreign_cpu_pct') && v > 10);
  const F = flatten(R);
  const out = { ...F, date: R.date, quick: QUICK, shared_machine: R.shared, machine: R.machine, versions: R.versions, notes: R.notes };
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const stamp = R.date.slice(0, 10) + (QUICK ? '-quick' : '');
  fs.writeFileSync(path.join(OUT_DIR, `${stamp}.json`), `${JSON.stringify(out, null, 2)}\n`);
  const md = markdown(R, F);
  fs.writeFileSync(path.join(OUT_DIR, `${stamp}.md`), md);
  console.log(`\n${md}`);
  console.log(`written: ${path.join(OUT_DIR, `${stamp}.md`)} and .json`);
}

main().then(() => process.exit(0), (e) => {
  console.error(e);
  process.exit(1);
});
