'use strict';
// The TLS policy of both listeners (docs/security.md): TLS 1.2 and 1.3 only, TLS 1.2 limited to
// ECDHE with AEAD ciphers, no compression, no renegotiation. Probed with `openssl s_client`
// and `sslscan` (fast, always), and with `testssl` when OTAHUB_SLOW_TESTS=1 (about 70 s per
// listener). The device listener is probed with a client certificate of a registered CA.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { startDeviceFixture } = require('../e2e/lib/device_fixture');

const SLOW = process.env.OTAHUB_SLOW_TESTS === '1';
const TLS12_CIPHERS = new Set([
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-RSA-CHACHA20-POLY1305',
]);
const TLS13_SUITES = new Set(['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']);

let f;
let leaf;        // a device certificate of a registered CA, for the device listener
let leafFiles;   // {cert, key} on disk for the CLI tools
let listeners;   // [{name, port, client: [...extra s_client args]}]

function haveTool(name) {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'pipe' });
    return true;
  } catch (_) {
    return false;
  }
}

/** Runs a command to completion (never rejects); resolves {code, out} with stdout+stderr. */
function run(cmd, args, { input = '', timeoutMs = 20000 } = {}) {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? -1) : 0, out: `${stdout}${stderr}` });
    });
    child.stdin.on('error', () => {}); // the tool may exit before reading its input
    child.stdin.end(input);
  });
}

/** One s_client handshake; resolves {protocol, cipher, out}. `protocol` is null when refused. */
async function sClient(listener, args, input = '') {
  const { out } = await run('openssl', ['s_client', '-connect', `127.0.0.1:${listener.port}`,
    '-servername', 'localhost', '-CAfile', f.hub.certs.ca, ...listener.client, ...args], { input });
  const m = /^New, (TLSv1\.[0-3]|SSLv3), Cipher is (\S+)/m.exec(out);
  return { protocol: m ? m[1] : null, cipher: m ? m[2] : null, out };
}

before(async () => {
  f = await startDeviceFixture({ apiTls: true });
  const root = f.pki.root('TLS Policy Root');
  await f.registerCa(root, { jitp: { product_name: 'sensor', tags: [], description: '' } });
  leaf = root.issueLeaf({ cn: 'tls-policy' });
  leafFiles = { cert: path.join(f.hub.dir, 'leaf.pem'), key: path.join(f.hub.dir, 'leaf-key.pem') };
  fs.writeFileSync(leafFiles.cert, leaf.chainPem);
  fs.writeFileSync(leafFiles.key, leaf.keyPem);
  listeners = [
    { name: 'API', port: f.hub.apiPort, client: [] },
    { name: 'device', port: f.hub.devicePort, client: ['-cert', leafFiles.cert, '-key', leafFiles.key] },
  ];
});

after(async () => {
  if (f) {
    await f.hub.stop();
    f.pki.cleanup();
  }
});

test('TLS 1.0 and 1.1 are refused with a protocol_version alert on both listeners', async () => {
  for (const l of listeners) {
    for (const version of ['-tls1', '-tls1_1']) {
      // SECLEVEL=0 so that the client really offers the old protocol: the refusal is the hub's.
      const r = await sClient(l, [version, '-cipher', 'ALL:@SECLEVEL=0']);
      assert.equal(r.protocol, null, `${l.name} ${version} negotiated ${r.protocol}`);
      assert.match(r.out, /alert protocol version/, `${l.name} ${version}`);
    }
  }
});

test('TLS 1.2 works and picks an ECDHE AEAD cipher; TLS 1.3 works; no compression', async () => {
  for (const l of listeners) {
    const r12 = await sClient(l, ['-tls1_2']);
    assert.equal(r12.protocol, 'TLSv1.2', `${l.name}: ${r12.out.slice(0, 400)}`);
    assert.ok(TLS12_CIPHERS.has(r12.cipher), `${l.name} TLS 1.2 cipher ${r12.cipher}`);
    assert.match(r12.out, /Compression: NONE/);
    const r13 = await sClient(l, ['-tls1_3']);
    assert.equal(r13.protocol, 'TLSv1.3', `${l.name}: ${r13.out.slice(0, 400)}`);
    assert.ok(TLS13_SUITES.has(r13.cipher), `${l.name} TLS 1.3 suite ${r13.cipher}`);
    assert.match(r13.out, /Compression: NONE/);
  }
});

test('every TLS 1.2 cipher OpenSSL knows outside the ECDHE+AEAD list is refused (one s_client each)', async () => {
  const all = execFileSync('openssl', ['ciphers', '-tls1_2', 'ALL:COMPLEMENTOFALL:@SECLEVEL=0']).toString()
    .trim().split(':').filter((c) => !c.startsWith('TLS_'));
  assert.ok(all.length > 50, `only ${all.length} ciphers to try`);
  for (const l of listeners) {
    const accepted = [];
    for (let i = 0; i < all.length; i += 16) {
      const batch = all.slice(i, i + 16);
      const results = await Promise.all(batch.map((c) => sClient(l, ['-tls1_2', '-cipher', `${c}:@SECLEVEL=0`])));
      results.forEach((r, j) => { if (r.protocol) accepted.push(batch[j]); });
    }
    for (const c of accepted) assert.ok(TLS12_CIPHERS.has(c), `${l.name} accepts ${c}`);
    // The server key is ECDSA: the three ECDHE-ECDSA AEAD suites are the ones it can use.
    assert.deepEqual(accepted.sort(), ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384',
      'ECDHE-ECDSA-CHACHA20-POLY1305'].sort(), `${l.name} accepted set`);
  }
});

test('client-initiated renegotiation is refused on TLS 1.2', async () => {
  for (const l of listeners) {
    // "R" asks s_client to renegotiate; the hub answers no_renegotiation.
    const r = await sClient(l, ['-tls1_2'], 'R\n');
    assert.equal(r.protocol, 'TLSv1.2', l.name);
    assert.match(r.out, /RENEGOTIATING/, l.name);
    assert.match(r.out, /no renegotiation/, `${l.name}: ${r.out.slice(-300)}`);
  }
});

test('sslscan: no SSLv2/SSLv3/TLS 1.0/1.1, no renegotiation, fallback SCSV, only ECDHE AEAD ciphers', { skip: haveTool('sslscan') ? false : 'sslscan not installed (deploy/packages.txt lists it)' }, async () => {
  for (const l of listeners) {
    const args = ['--no-colour', '--no-heartbleed'];
    if (l.name === 'device') args.push(`--certs=${leafFiles.cert}`, `--pk=${leafFiles.key}`);
    const { out } = await run('sslscan', [...args, `127.0.0.1:${l.port}`]);
    for (const proto of ['SSLv2', 'SSLv3', 'TLSv1.0', 'TLSv1.1']) {
      assert.match(out, new RegExp(`^${proto.replace('.', '\\.')}\\s+disabled`, 'm'), `${l.name} ${proto}`);
    }
    assert.match(out, /^TLSv1\.2\s+enabled/m, `${l.name} TLS 1.2`);
    assert.match(out, /^TLSv1\.3\s+enabled/m, `${l.name} TLS 1.3`);
    assert.match(out, /Session renegotiation not supported/, `${l.name} renegotiation`);
    assert.match(out, /Server supports TLS Fallback SCSV/, `${l.name} fallback SCSV`);
    const ciphers = [...out.matchAll(/^(?:Preferred|Accepted)\s+(TLSv1\.[23])\s+\d+ bits\s+(\S+)/gm)];
    const tls12 = ciphers.filter((m) => m[1] === 'TLSv1.2').map((m) => m[2]);
    const tls13 = ciphers.filter((m) => m[1] === 'TLSv1.3').map((m) => m[2]);
    assert.ok(tls13.length > 0 && tls13.every((c) => TLS13_SUITES.has(c)), `${l.name} TLS 1.3: ${tls13}`);
    assert.ok(tls12.length > 0 && tls12.every((c) => TLS12_CIPHERS.has(c)), `${l.name} TLS 1.2: ${tls12}`);
  }
});

// testssl 3.0.8 takes about 70 s per listener: run it only when asked.
const testsslSkip = !SLOW ? 'set OTAHUB_SLOW_TESTS=1 to run testssl (about 70 s per listener)'
  : (haveTool('testssl') ? false : 'testssl not installed (Debian testssl.sh, deploy/packages.txt)');
test('testssl: protocols, cipher categories and known vulnerabilities all OK on both listeners', { skip: testsslSkip, timeout: 400000 }, async (t) => {
  for (const l of listeners) {
    const json = path.join(f.hub.dir, `testssl-${l.name}.json`);
    // 3.0.8 has no client-certificate option: against the device listener it still tests
    // protocols, ciphers and the vulnerabilities that need no completed handshake.
    await run('testssl', ['--quiet', '--color', '0', '--warnings', 'off', '-p', '-S', '-U',
      '--add-ca', f.hub.certs.ca, '--jsonfile', json, `https://127.0.0.1:${l.port}`], { timeoutMs: 190000 });
    const findings = JSON.parse(fs.readFileSync(json, 'utf8'));
    // Test certificates (30 days, no CRL/OCSP URI) and DNS are not what this checks.
    const relevant = findings.filter((x) => !/^(cert_|DNS_CAA|scanProblem|intermediate_cert)/.test(x.id));
    // Without a client certificate testssl 3.0.8 cannot finish a handshake with the device
    // listener, so it reports a few checks as untestable (WARN). The s_client tests above cover
    // renegotiation with a client certificate; the device endpoint has no HTTP compression.
    const untestable = relevant.filter((x) => x.severity === 'WARN' && /client x509-based authentication prevents/.test(x.finding));
    for (const x of untestable) t.diagnostic(`${l.name}: ${x.id} not testable by testssl (needs a client certificate)`);
    const bad = relevant.filter((x) => !['OK', 'INFO', 'DEBUG'].includes(x.severity) && !untestable.includes(x));
    assert.ok(untestable.length <= 3, `${l.name}: ${untestable.length} checks untestable`);
    t.diagnostic(`${l.name}: ${relevant.length} findings, ${bad.length} above INFO`);
    assert.deepEqual(bad.map((x) => `${x.id} ${x.severity} ${x.finding}`), [], `${l.name} listener`);
    const byId = Object.fromEntries(findings.map((x) => [x.id, x]));
    for (const id of ['SSLv2', 'SSLv3', 'TLS1', 'TLS1_1']) {
      assert.match(byId[id]?.finding ?? '', /not offered/, `${l.name} ${id}`);
    }
    assert.match(byId.TLS1_3?.finding ?? '', /offered/, `${l.name} TLS 1.3`);
  }
});
