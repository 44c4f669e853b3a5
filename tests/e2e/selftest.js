'use strict';
// Self-test of lib/device_client.js against a minimal Phoenix V2 server written here (Node https
// with requestCert + ws), with throwaway certificates made by the openssl CLI.
// Run: node tests/e2e/selftest.js   (exit code 0 when every check passes)

const assert = require('node:assert/strict');
const { execFileSync, spawn } = require('node:child_process');
const { EventEmitter } = require('node:events');
const fs = require('node:fs');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { WebSocketServer } = require('ws');
const { connectDevice, nervesHubLinkJoinPayload, rawUpgrade } = require('./lib/device_client');

const NO_AUTH_REASON = 'no certificate pair or shared secrets connection settings were provided';
const JOIN_KEYS = [
    'nerves_fw_uuid', 'nerves_fw_version', 'nerves_fw_product', 'nerves_fw_architecture',
    'nerves_fw_platform', 'nerves_fw_author', 'nerves_fw_description', 'nerves_fw_vcs_identifier',
    'nerves_fw_misc', 'nerves_fw_application_part0_devpath', 'fwup_version', 'device_api_version',
    'console_version', 'fwup_public_keys', 'archive_public_keys', 'currently_downloading_uuid', 'meta',
];
const UPDATE = {
    update_available: true,
    firmware_url: 'https://example.invalid/firmware/42/0b9a.fw',
    firmware_meta: {
        architecture: 'aarch64', author: 'otahub', description: 'selftest', misc: null, platform: 'rpi4',
        product: 'otahub_test', uuid: '0b9a5f6e-0000-4000-8000-000000000042', vcs_identifier: null, version: '1.2.4',
    },
    size: 41943040,
    checksum: '3F'.repeat(32),
    partials_checksums: ['A1'.repeat(32)],
    deployment_id: 17,
};

// ---------------------------------------------------------------- throwaway PKI (openssl CLI)

function openssl(args, cwd) {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir, name, cn) {
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${cn}`,
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
}

function makeLeaf(dir, name, ca, cn, extensions) {
    fs.writeFileSync(path.join(dir, `${name}.ext`), extensions.join('\n') + '\n');
    openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`,
        '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`], dir);
}

function makePki(dir) {
    makeCa(dir, 'server-ca', 'otahub selftest server CA');
    makeLeaf(dir, 'server', 'server-ca', 'localhost', [
        'basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature',
        'extendedKeyUsage=serverAuth', 'subjectAltName=DNS:localhost,IP:127.0.0.1']);
    const client = ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature',
        'extendedKeyUsage=clientAuth'];
    makeCa(dir, 'device-ca', 'otahub selftest device CA');
    makeLeaf(dir, 'device', 'device-ca', 'selftest-device-0001', client);
    makeCa(dir, 'rogue-ca', 'otahub selftest rogue CA');
    makeLeaf(dir, 'rogue', 'rogue-ca', 'selftest-device-0001', client);
    const read = (f) => fs.readFileSync(path.join(dir, f), 'utf8');
    return {
        serverCa: read('server-ca.crt'), serverCert: read('server.crt'), serverKey: read('server.key'),
        deviceCa: read('device-ca.crt'), deviceCert: read('device.crt'), deviceKey: read('device.key'),
        rogueCert: read('rogue.crt'), rogueKey: read('rogue.key'),
    };
}

// ---------------------------------------------------------------- minimal Phoenix V2 device endpoint

function refuse(socket, status, text, headers = {}) {
    let head = `HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-length: 0\r\n`;
    for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
    socket.end(`${head}\r\n`);
}

// Speaks enough Phoenix V2 for the client: replies to phx_join, heartbeat and phx_leave, pushes
// `update` (fast-laned, null refs) after a join, answers status_update with a `reboot` push,
// closes on `test:close`, replies to `test:echo`. Emits 'upgrade', 'frame', 'join', 'close'.
function startServer(pki, { requireCert }) {
    const events = new EventEmitter();
    const state = { events, upgrades: [], frames: [], joins: [], connections: 0, closes: [] };
    const server = https.createServer({
        key: pki.serverKey, cert: pki.serverCert, ca: pki.deviceCa,
        requestCert: true, rejectUnauthorized: requireCert,
    });
    const wss = new WebSocketServer({ noServer: true });
    server.on('request', (req, res) => res.writeHead(404).end());
    server.on('upgrade', (req, socket, head) => {
        state.upgrades.push(req.url);
        events.emit('upgrade', req.url);
        const url = new URL(req.url, 'https://localhost');
        if (!['/socket/websocket', '/device-socket/websocket'].includes(url.pathname)) {
            return refuse(socket, 404, 'Not Found');
        }
        if (!/^2\.0\.\d+$/.test(url.searchParams.get('vsn') ?? '')) return refuse(socket, 400, 'Bad Request');
        const peer = req.socket.getPeerCertificate();
        if (!peer || !peer.subject) {
            return refuse(socket, 401, 'Unauthorized', { 'nh-connection-error-reason': NO_AUTH_REASON });
        }
        if (!req.socket.authorized) return refuse(socket, 401, 'Unauthorized');
        if (!req.headers['sec-websocket-key']) return refuse(socket, 400, 'Bad Request');
        wss.handleUpgrade(req, socket, head, (ws) => serve(ws, peer.subject.CN));
    });

    function serve(ws, identifier) {
        state.connections += 1;
        const send = (frame) => ws.send(JSON.stringify(frame));
        ws.on('message', (data) => {
            const text = data.toString();
            const frame = JSON.parse(text);
            const [joinRef, ref, topic, event, payload] = frame;
            state.frames.push(frame);
            events.emit('frame', frame, text);
            const reply = (status, response) => send([joinRef, ref, topic, 'phx_reply', { status, response }]);
            if (topic === 'phoenix' && event === 'heartbeat') return reply('ok', {});
            if (event === 'phx_leave') return reply('ok', {});
            if (topic === 'device' && event === 'phx_join') {
                state.joins.push({ identifier, payload, joinRef });
                events.emit('join', payload);
                if (!payload.nerves_fw_uuid) return reply('error', { error: 'could not connect' });
                reply('ok', {});
                return send([null, null, 'device', 'update', UPDATE]);
            }
            if (topic === 'device' && event === 'status_update') return send([null, null, 'device', 'reboot', {}]);
            if (topic === 'device' && event === 'test:close') return ws.close(1000);
            if (topic === 'device' && event === 'test:echo') return reply('ok', payload);
        });
        ws.on('close', (code) => {
            state.closes.push(code);
            events.emit('close', code);
        });
    }

    return new Promise((resolve) => {
        server.listen(0, '127.0.0.1', () => {
            state.port = server.address().port;
            state.close = () => new Promise((done) => {
                for (const ws of wss.clients) ws.terminate();
                server.closeAllConnections();
                server.close(() => done());
            });
            resolve(state);
        });
    });
}

function freePort() {
    return new Promise((resolve, reject) => {
        const probe = net.createServer();
        probe.on('error', reject);
        probe.listen(0, '127.0.0.1', () => {
            const { port } = probe.address();
            probe.close(() => resolve(port));
        });
    });
}

// `openssl s_server` requiring a client certificate from the device CA, failing the handshake
// with an alert otherwise (-verify_return_error). Resolves once it prints ACCEPT.
async function startOpensslServer(dir, attempts = 3) {
    const port = await freePort();
    const child = spawn('openssl', ['s_server', '-accept', `127.0.0.1:${port}`, '-cert', 'server.crt',
        '-key', 'server.key', '-CAfile', 'device-ca.crt', '-Verify', '1', '-verify_return_error', '-www'],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const ready = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), 5000);
        const onData = (chunk) => {
            output += chunk;
            if (output.includes('ACCEPT')) {
                clearTimeout(timer);
                resolve(true);
            }
        };
        child.stdout.on('data', onData);
        child.stderr.on('data', onData);
        child.on('exit', () => {
            clearTimeout(timer);
            resolve(false);
        });
    });
    if (!ready) {
        child.kill();
        // The port may have been taken between freePort() and the bind.
        if (attempts > 1) return startOpensslServer(dir, attempts - 1);
        throw new Error(`openssl s_server did not start: ${output}`);
    }
    return {
        port,
        close: () => new Promise((resolve) => {
            if (child.exitCode !== null) return resolve();
            child.on('exit', () => resolve());
            child.kill();
        }),
    };
}

function waitForEvent(emitter, name, predicate = () => true, timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
        const onEvent = (...args) => {
            if (!predicate(...args)) return;
            clearTimeout(timer);
            emitter.off(name, onEvent);
            resolve(args);
        };
        const timer = setTimeout(() => {
            emitter.off(name, onEvent);
            reject(new Error(`timed out waiting for server event ${name}`));
        }, timeoutMs);
        emitter.on(name, onEvent);
    });
}

// ---------------------------------------------------------------- checks

async function main() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'otahub-e2e-selftest-'));
    const pki = makePki(dir);
    const lenient = await startServer(pki, { requireCert: false }); // refusals as HTTP statuses
    const strict = await startServer(pki, { requireCert: true }); // drops refused clients
    const sServer = await startOpensslServer(dir); // refuses unknown CAs with a TLS alert
    const url = (s) => `wss://localhost:${s.port}`;
    const good = { cert: pki.deviceCert, key: pki.deviceKey, ca: pki.serverCa };
    const devices = [];
    const connect = async (opts) => {
        const d = await connectDevice(opts);
        devices.push(d);
        return d;
    };
    const expectRefusal = async (opts) => {
        try {
            const d = await connectDevice(opts);
            devices.push(d);
        } catch (err) {
            return err;
        }
        throw new Error('connectDevice resolved, expected a refusal');
    };

    const checks = [
        ['join payload builder has exactly the NervesHubLink keys', async () => {
            const p = nervesHubLinkJoinPayload({ uuid: 'u-1', version: '1.2.3', product: 'p', platform: 'rpi4', architecture: 'aarch64' });
            assert.deepEqual(Object.keys(p), JOIN_KEYS);
            assert.equal(p.nerves_fw_uuid, 'u-1');
            assert.equal(p.device_api_version, '2.3.0');
            assert.equal(p.currently_downloading_uuid, null);
            assert.deepEqual(p.meta, { firmware_auto_revert_detected: false, firmware_validated: true });
            const trimmed = nervesHubLinkJoinPayload({ extra: { fwup_public_keys: undefined, x: 1 } });
            assert.ok(!('fwup_public_keys' in trimmed));
            assert.equal(trimmed.x, 1);
        }],
        ['device connects over mTLS, joins "device" and receives the fast-laned update push', async () => {
            const joinPayload = nervesHubLinkJoinPayload({ uuid: 'uuid-happy', version: '1.2.3', product: 'otahub_test', platform: 'rpi4', architecture: 'aarch64' });
            const d = await connect({ url: url(strict), ...good, joinPayload });
            assert.equal(strict.upgrades.at(-1), '/socket/websocket?vsn=2.0.0');
            assert.deepEqual(d.joinResponse, {});
            const join = strict.joins.at(-1);
            assert.equal(join.identifier, 'selftest-device-0001');
            assert.deepEqual(Object.keys(join.payload), JOIN_KEYS);
            assert.deepEqual(join.payload, joinPayload);
            assert.deepEqual(await d.waitForPush('update'), UPDATE);
            const frame = d.frames.find((f) => f.event === 'update');
            assert.equal(frame.join_ref, null);
            assert.equal(frame.ref, null);
        }],
        ['device events carry the join_ref and a fresh ref; server pushes are recorded in order', async () => {
            const d = await connect({ url: url(strict), ...good });
            const seen = waitForEvent(strict.events, 'frame', (f) => f[3] === 'status_update');
            const ref = d.push('status_update', { status: 'received' });
            const [[joinRef, sentRef, topic, , payload]] = await seen;
            assert.equal(joinRef, d.channel.joinRef());
            assert.equal(typeof joinRef, 'string');
            assert.equal(sentRef, ref);
            assert.equal(topic, 'device');
            assert.deepEqual(payload, { status: 'received' });
            assert.deepEqual(await d.waitForPush('reboot'), {});
            assert.deepEqual(d.pushes.map((p) => p.event), ['update', 'reboot']);
            assert.deepEqual(await d.request('test:echo', { a: 1 }), { status: 'ok', response: { a: 1 } });
            await assert.rejects(d.waitForPush('identify', 200), /timed out/);
        }],
        ['heartbeats go to topic "phoenix" and ping measures the reply', async () => {
            const d = await connect({ url: url(strict), ...good, heartbeatIntervalMs: 100 });
            for (let i = 0; i < 3; i += 1) {
                const [frame] = await waitForEvent(strict.events, 'frame', (f) => f[2] === 'phoenix');
                assert.equal(frame[0], null);
                assert.equal(typeof frame[1], 'string');
                assert.equal(frame[3], 'heartbeat');
                assert.deepEqual(frame[4], {});
            }
            assert.ok(d.isConnected(), 'heartbeat replies keep the socket up');
            assert.equal(typeof (await d.ping()), 'number');
        }],
        ['close() ends the connection with code 1000', async () => {
            const d = await connect({ url: url(strict), ...good });
            const serverClose = waitForEvent(strict.events, 'close');
            await d.close();
            assert.deepEqual(await serverClose, [1000]);
            assert.equal(d.isConnected(), false);
            assert.throws(() => d.push('status_update', {}), /device closed/);
        }],
        ['a server close is observed and, by default, not retried', async () => {
            const d = await connect({ url: url(strict), ...good });
            const connectionsBefore = strict.connections;
            const waiting = d.waitForPush('identify', 5000);
            d.push('test:close', {});
            const close = await d.waitForClose();
            assert.equal(close.code, 1000);
            assert.equal(d.ended, true);
            await assert.rejects(waiting, /device closed|connection closed/);
            assert.equal(strict.connections, connectionsBefore);
        }],
        ['reconnect: true rejoins, and gives up after maxReconnects', async () => {
            const d = await connect({ url: url(strict), ...good, reconnect: true, maxReconnects: 2 });
            d.push('test:close', {});
            await d.waitForJoinCount(2);
            d.push('test:close', {});
            await d.waitForJoinCount(3);
            assert.equal(d.ended, false);
            const third = waitForEvent(strict.events, 'close');
            d.push('test:close', {});
            await third;
            await assert.rejects(d.waitForJoinCount(4, 2000), /device closed|connection closed|timed out/);
            assert.equal(d.closes.length, 3);
            assert.equal(d.ended, true);
        }],
        ['a refused join rejects with the response and is not retried', async () => {
            const closed = waitForEvent(strict.events, 'close');
            const err = await expectRefusal({ url: url(strict), ...good, joinPayload: { device_api_version: '2.3.0' } });
            assert.equal(err.kind, 'join');
            assert.deepEqual(err.response, { error: 'could not connect' });
            await closed;
            assert.equal(strict.joins.filter((j) => !j.payload.nerves_fw_uuid).length, 1);
        }],
        ['/device-socket path is used when asked', async () => {
            await connect({ url: url(strict), ...good, socketPath: '/device-socket' });
            assert.equal(strict.upgrades.at(-1), '/device-socket/websocket?vsn=2.0.0');
        }],
        ['an upgrade without a client certificate is refused with 401 and the reason header', async () => {
            const err = await expectRefusal({ url: url(lenient), ca: pki.serverCa });
            assert.equal(err.kind, 'upgrade');
            assert.equal(err.status, 401);
            assert.equal(err.headers['nh-connection-error-reason'], NO_AUTH_REASON);
        }],
        ['rawUpgrade reports 101, 401 + reason header, 400 for a bad vsn, 404 for other paths', async () => {
            const base = { host: 'localhost', ca: pki.serverCa };
            const device = { cert: pki.deviceCert, key: pki.deviceKey };
            const ok = await rawUpgrade({ ...base, port: strict.port, ...device });
            assert.equal(ok.status, 101);
            assert.equal(ok.accepted, true);
            assert.equal(ok.tlsProtocol, 'TLSv1.3');
            const noCert = await rawUpgrade({ ...base, port: lenient.port });
            assert.equal(noCert.status, 401);
            assert.equal(noCert.headers['nh-connection-error-reason'], NO_AUTH_REASON);
            const badVsn = await rawUpgrade({ ...base, port: lenient.port, ...device, path: '/socket/websocket?vsn=1.0.0' });
            assert.equal(badVsn.status, 400);
            const otherPath = await rawUpgrade({ ...base, port: lenient.port, ...device, path: '/nope' });
            assert.equal(otherPath.status, 404);
            const noKey = await rawUpgrade({ ...base, port: strict.port, ...device, headers: { 'sec-websocket-key': null } });
            assert.equal(noKey.status, 400);
            const untrusted = await rawUpgrade({ host: 'localhost', port: strict.port, ca: pki.deviceCa, ...device });
            assert.equal(untrusted.status, null);
            assert.equal(untrusted.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', JSON.stringify(untrusted));
        }],
        // Node's TLS server drops a refused client without an alert; `openssl s_server` sends one,
        // as an OpenSSL verify callback that fails does.
        ['rawUpgrade reports TLS alerts: unknown ca (TLS 1.3 and 1.2), certificate required', async () => {
            const base = { host: 'localhost', port: sServer.port, ca: pki.serverCa };
            const rogue = await rawUpgrade({ ...base, cert: pki.rogueCert, key: pki.rogueKey });
            assert.equal(rogue.status, null);
            assert.equal(rogue.alert, 'unknown ca', JSON.stringify(rogue));
            assert.equal(rogue.code, 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA');
            const tls12 = await rawUpgrade({ ...base, cert: pki.rogueCert, key: pki.rogueKey, maxVersion: 'TLSv1.2' });
            assert.equal(tls12.secureConnected, false);
            assert.equal(tls12.alert, 'unknown ca', JSON.stringify(tls12));
            const missing = await rawUpgrade({ ...base });
            assert.equal(missing.alert, 'certificate required', JSON.stringify(missing));
        }],
        ['connectDevice rejects a certificate from an unknown CA with the TLS alert', async () => {
            const err = await expectRefusal({ url: `wss://localhost:${sServer.port}`, cert: pki.rogueCert, key: pki.rogueKey, ca: pki.serverCa });
            assert.equal(err.kind, 'tls', err.message);
            assert.equal(err.alert, 'unknown ca');
        }],
    ];

    let failed = 0;
    console.log(`1..${checks.length}`);
    for (const [index, [name, fn]] of checks.entries()) {
        const started = Date.now();
        try {
            await fn();
            console.log(`ok ${index + 1} - ${name} (${Date.now() - started} ms)`);
        } catch (err) {
            failed += 1;
            console.log(`not ok ${index + 1} - ${name}`);
            console.log(`  ${String(err && err.stack || err).split('\n').join('\n  ')}`);
        }
        await Promise.all(devices.splice(0).map((d) => d.close()));
    }
    await Promise.all([lenient.close(), strict.close(), sServer.close()]);
    fs.rmSync(dir, { recursive: true, force: true });
    console.log(failed === 0 ? `# all ${checks.length} passed` : `# ${failed} of ${checks.length} failed`);
    return failed === 0 ? 0 : 1;
}

// A hung check must fail the run, not hang it.
const watchdog = setTimeout(() => {
    console.log('not ok - selftest timed out after 120 s');
    process.exit(1);
}, 120000);
watchdog.unref();

main().then(
    (code) => {
        process.exitCode = code;
    },
    (err) => {
        console.log(`not ok - selftest crashed: ${err && err.stack || err}`);
        process.exitCode = 1;
    },
);
