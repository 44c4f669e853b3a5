'use strict';
// A reference NervesHub-style device for end-to-end tests: the official Phoenix JS client
// (npm `phoenix`, V2 JSON serializer, the one NervesHubLink/Slipstream speak) over a `ws`
// transport that carries the TLS client certificate. See README.md for usage.

const crypto = require('node:crypto');
const net = require('node:net');
const tls = require('node:tls');
const WebSocket = require('ws');
const { Socket } = require('phoenix');

const DEVICE_TOPIC = 'device';
const DEFAULT_TIMEOUT_MS = 5000;
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/**
 * The join payload NervesHubLink 2.x sends on topic "device" (nerveshub.md §1.3, §1.10):
 * exactly these 17 keys unless `extra` adds more or a key is set to `undefined` in `extra`.
 */
function nervesHubLinkJoinPayload({
    uuid = crypto.randomUUID(),
    version = '1.0.0',
    product = 'otahub_test',
    platform = 'rpi4',
    architecture = 'aarch64',
    author = 'The Nerves Team',
    description = '',
    vcsIdentifier = '',
    misc = '',
    devpath = '/dev/mmcblk0p3',
    fwupVersion = '1.13.0',
    deviceApiVersion = '2.3.0',
    consoleVersion = '2.0.0',
    fwupPublicKeys = 'on_connect',
    archivePublicKeys = 'on_connect',
    currentlyDownloadingUuid = null,
    firmwareAutoRevertDetected = false,
    firmwareValidated = true,
    extra = {},
} = {}) {
    const payload = {
        nerves_fw_uuid: uuid,
        nerves_fw_version: version,
        nerves_fw_product: product,
        nerves_fw_architecture: architecture,
        nerves_fw_platform: platform,
        nerves_fw_author: author,
        nerves_fw_description: description,
        nerves_fw_vcs_identifier: vcsIdentifier,
        nerves_fw_misc: misc,
        nerves_fw_application_part0_devpath: devpath,
        fwup_version: fwupVersion,
        device_api_version: deviceApiVersion,
        console_version: consoleVersion,
        fwup_public_keys: fwupPublicKeys,
        archive_public_keys: archivePublicKeys,
        currently_downloading_uuid: currentlyDownloadingUuid,
        meta: {
            firmware_auto_revert_detected: firmwareAutoRevertDetected,
            firmware_validated: firmwareValidated,
        },
        ...extra,
    };
    for (const [k, v] of Object.entries(payload)) {
        if (v === undefined) delete payload[k];
    }
    return payload;
}

/** The TLS alert named in an OpenSSL error ("tlsv1 alert unknown ca" → "unknown ca"), or null. */
function tlsAlertOf(error) {
    if (!error) return null;
    const text = String(error.message || error);
    const m = /(?:sslv3|tlsv1|tlsv13) alert ([a-z][a-z ]*[a-z])/i.exec(text);
    if (m) return m[1].toLowerCase();
    const c = /_ALERT_([A-Z_]+)$/.exec(error.code || '');
    return c ? c[1].toLowerCase().replace(/_/g, ' ') : null;
}

function endpointFor(url, socketPath) {
    const u = new URL(url);
    let path = socketPath ?? (u.pathname && u.pathname !== '/' ? u.pathname : '/socket');
    // Phoenix appends "/websocket" itself.
    path = path.replace(/\/+$/, '').replace(/\/websocket$/, '');
    return `${u.protocol}//${u.host}${path}`;
}

function timeoutError(what, ms) {
    const err = new Error(`timed out after ${ms} ms waiting for ${what}`);
    err.kind = 'timeout';
    return err;
}

/**
 * One connected device. Create with connectDevice(). Records every inbound frame (`frames`),
 * every server push on topic "device" (`pushes`), and connection closes and errors.
 */
class DeviceConnection {
    constructor(opts) {
        if (!opts || !opts.url) throw new Error('connectDevice: url is required');
        this.options = opts;
        this.endpoint = endpointFor(opts.url, opts.socketPath);
        this.joinPayload = opts.joinPayload ?? nervesHubLinkJoinPayload();
        this.topic = opts.topic ?? DEVICE_TOPIC;
        this.frames = []; // every decoded inbound message {join_ref, ref, topic, event, payload}
        this.pushes = []; // server events on the channel: {event, payload, ref, joinRef, at}
        this.closes = []; // {code, reason, wasClean, at}
        this.errors = []; // {message, code, alert, status, at}
        this.joinResponse = undefined;
        this.joinCount = 0;
        this.upgradeRefusal = null; // {status, headers, body} of the last refused upgrade
        this.ended = false;
        this._consumed = new Set();
        this._pushWaiters = [];
        this._closeWaiters = [];
        this._joinWaiters = [];
    }

    _makeTransport() {
        const device = this;
        const o = this.options;
        const wsOptions = {
            cert: o.cert,
            key: o.key,
            ca: o.ca,
            servername: o.servername,
            rejectUnauthorized: o.rejectUnauthorized ?? true,
            headers: o.headers,
            handshakeTimeout: o.connectTimeoutMs ?? DEFAULT_TIMEOUT_MS,
            perMessageDeflate: o.perMessageDeflate ?? true,
        };
        // Phoenix calls `new transport(url, protocols)`; the subclass binds the TLS options.
        return class MTLSWebSocket extends WebSocket {
            constructor(url, protocols) {
                super(url, protocols, wsOptions);
                device.upgradeRefusal = null;
                // With a listener ws leaves the refused response to us: keep status, headers and
                // body, then abort, which reports error + close to Phoenix as without a listener.
                this.on('unexpected-response', (req, res) => {
                    const refusal = { status: res.statusCode, headers: res.headers, body: '' };
                    device.upgradeRefusal = refusal;
                    res.setEncoding('utf8');
                    res.on('data', (chunk) => {
                        if (refusal.body.length < 65536) refusal.body += chunk;
                    });
                    const abort = () => {
                        if (this.readyState === WebSocket.CONNECTING) this.terminate();
                    };
                    res.on('end', abort);
                    res.on('error', abort);
                    setTimeout(abort, 1000).unref();
                });
            }
        };
    }

    _connect() {
        const o = this.options;
        const connectTimeoutMs = o.connectTimeoutMs ?? DEFAULT_TIMEOUT_MS;
        const reconnect = o.reconnect ?? false;
        const maxReconnects = reconnect ? (o.maxReconnects ?? 3) : 0;
        const debug = o.debug ?? !!process.env.OTAHUB_E2E_DEBUG;
        this.socket = new Socket(this.endpoint, {
            transport: this._makeTransport(),
            params: o.params ?? {},
            timeout: connectTimeoutMs,
            heartbeatIntervalMs: o.heartbeatIntervalMs ?? 30000,
            // Bounded: after maxReconnects closes the socket is disconnected for good.
            reconnectAfterMs: o.reconnectAfterMs ?? ((tries) => [50, 100, 200, 500][tries - 1] ?? 1000),
            rejoinAfterMs: o.rejoinAfterMs ?? ((tries) => [200, 500, 1000][tries - 1] ?? 2000),
            logger: debug ? (kind, msg, data) => console.error(`[device ${kind}] ${msg}`, data ?? '') : null,
        });

        return new Promise((resolve, reject) => {
            let settled = false;
            const fail = (err) => {
                if (settled) return;
                settled = true;
                clearTimeout(timer);
                this._shutdown(err);
                reject(err);
            };
            const timer = setTimeout(() => fail(timeoutError('connect and join', connectTimeoutMs)), connectTimeoutMs);

            this.socket.onMessage((msg) => this.frames.push(msg));
            this.socket.onError((event) => {
                const cause = (event && event.error) || event;
                const refusal = this.upgradeRefusal;
                const info = {
                    message: ((cause && cause.message) || String(cause)).trim(),
                    code: cause && cause.code,
                    alert: tlsAlertOf(cause),
                    status: refusal ? refusal.status : undefined,
                    at: Date.now(),
                };
                this.errors.push(info);
                if (!settled) {
                    const err = new Error(
                        refusal
                            ? `upgrade refused with HTTP ${refusal.status}`
                            : info.alert
                              ? `TLS alert: ${info.alert}`
                              : `connection error: ${info.message}`,
                    );
                    err.kind = refusal ? 'upgrade' : info.alert ? 'tls' : 'connection';
                    Object.assign(err, { alert: info.alert, code: info.code, cause });
                    if (refusal) Object.assign(err, refusal);
                    fail(err);
                }
            });
            this.socket.onClose((event) => {
                const close = {
                    code: event && event.code,
                    reason: event && event.reason ? String(event.reason) : '',
                    wasClean: !!(event && event.wasClean),
                    at: Date.now(),
                };
                this.closes.push(close);
                if (!settled) {
                    const err = new Error(`connection closed (code ${close.code}) before the join reply`);
                    Object.assign(err, { kind: 'closed', close });
                    fail(err);
                    return;
                }
                if (this.closes.length > maxReconnects) {
                    this._shutdown(new Error(`connection closed (code ${close.code})`));
                }
                this._closeWaiters.splice(0).forEach((w) => w.resolve(close));
            });

            this.channel = this.socket.channel(this.topic, this.joinPayload);
            this.channel.onMessage = (event, payload, ref, joinRef) => {
                if (!event.startsWith('phx_') && !event.startsWith('chan_reply_')) {
                    this._recordPush({ event, payload, ref, joinRef, at: Date.now() });
                }
                return payload;
            };
            this.socket.connect();
            this.channel
                .join(connectTimeoutMs)
                .receive('ok', (response) => {
                    this.joinResponse = response;
                    this.joinCount += 1;
                    this._joinWaiters = this._joinWaiters.filter((w) => {
                        if (this.joinCount < w.count) return true;
                        w.resolve(response);
                        return false;
                    });
                    if (!settled) {
                        settled = true;
                        clearTimeout(timer);
                        resolve(this);
                    }
                })
                .receive('error', (response) => {
                    this.joinResponse = response;
                    const err = new Error(`join of "${this.topic}" refused: ${JSON.stringify(response)}`);
                    Object.assign(err, { kind: 'join', response });
                    fail(err);
                })
                .receive('timeout', () => fail(timeoutError('the join reply', connectTimeoutMs)));
        });
    }

    _recordPush(push) {
        this.pushes.push(push);
        const index = this.pushes.length - 1;
        const waiter = this._pushWaiters.find((w) => w.event === push.event);
        if (waiter) {
            this._consumed.add(index);
            this._pushWaiters.splice(this._pushWaiters.indexOf(waiter), 1);
            clearTimeout(waiter.timer);
            waiter.resolve(push.payload);
        }
    }

    // Stops for good: no rejoin, no reconnect, pending waiters fail fast.
    _shutdown(reason) {
        if (this.ended) return;
        this.ended = true;
        if (this.channel) this.channel.leave();
        this.socket.disconnect();
        const err = reason instanceof Error ? reason : new Error(String(reason));
        for (const w of this._pushWaiters.splice(0)) {
            clearTimeout(w.timer);
            w.reject(new Error(`no "${w.event}" push: ${err.message}`));
        }
        for (const w of this._joinWaiters.splice(0)) {
            clearTimeout(w.timer);
            w.reject(new Error(`no rejoin: ${err.message}`));
        }
    }

    /**
     * Resolves with the payload of the next server push `event` not yet returned by an earlier
     * call (pushes received before the call count). Rejects after timeoutMs or once the device
     * is closed for good.
     */
    waitForPush(event, timeoutMs = DEFAULT_TIMEOUT_MS) {
        const index = this.pushes.findIndex((p, i) => p.event === event && !this._consumed.has(i));
        if (index !== -1) {
            this._consumed.add(index);
            return Promise.resolve(this.pushes[index].payload);
        }
        if (this.ended) return Promise.reject(new Error(`no "${event}" push: device closed`));
        return new Promise((resolve, reject) => {
            const waiter = { event, resolve, reject };
            waiter.timer = setTimeout(() => {
                this._pushWaiters.splice(this._pushWaiters.indexOf(waiter), 1);
                reject(timeoutError(`push "${event}"`, timeoutMs));
            }, timeoutMs);
            this._pushWaiters.push(waiter);
        });
    }

    /**
     * Resolves with {code, reason, wasClean} of the first connection close (immediately if
     * one already happened), or rejects after timeoutMs.
     */
    waitForClose(timeoutMs = DEFAULT_TIMEOUT_MS) {
        if (this.closes.length > 0) return Promise.resolve(this.closes[0]);
        return new Promise((resolve, reject) => {
            const waiter = { resolve };
            const timer = setTimeout(() => {
                this._closeWaiters.splice(this._closeWaiters.indexOf(waiter), 1);
                reject(timeoutError('the connection to close', timeoutMs));
            }, timeoutMs);
            waiter.resolve = (close) => {
                clearTimeout(timer);
                resolve(close);
            };
            this._closeWaiters.push(waiter);
        });
    }

    /** Resolves with the join response once the channel has joined `count` times in all. */
    waitForJoinCount(count, timeoutMs = DEFAULT_TIMEOUT_MS) {
        if (this.joinCount >= count) return Promise.resolve(this.joinResponse);
        if (this.ended) return Promise.reject(new Error('no rejoin: device closed'));
        return new Promise((resolve, reject) => {
            const waiter = { count, resolve, reject };
            waiter.timer = setTimeout(() => {
                this._joinWaiters.splice(this._joinWaiters.indexOf(waiter), 1);
                reject(timeoutError(`join number ${count}`, timeoutMs));
            }, timeoutMs);
            const done = waiter.resolve;
            waiter.resolve = (r) => {
                clearTimeout(waiter.timer);
                done(r);
            };
            this._joinWaiters.push(waiter);
        });
    }

    /**
     * Sends a device event on the joined channel the way NervesHubLink does (a fresh ref, the
     * channel's join_ref), without waiting for a reply: NervesHub never replies to device events.
     * Returns the ref used.
     */
    push(event, payload = {}) {
        if (this.ended) throw new Error(`push "${event}": device closed`);
        const ref = this.socket.makeRef();
        this.socket.push({ topic: this.topic, event, payload, ref, join_ref: this.channel.joinRef() });
        return ref;
    }

    /** Sends a device event and resolves with {status, response} of the phx_reply ("timeout" too). */
    request(event, payload = {}, timeoutMs = DEFAULT_TIMEOUT_MS) {
        if (this.ended) return Promise.reject(new Error(`request "${event}": device closed`));
        return new Promise((resolve) => {
            this.channel
                .push(event, payload, timeoutMs)
                .receive('ok', (response) => resolve({ status: 'ok', response }))
                .receive('error', (response) => resolve({ status: 'error', response }))
                .receive('timeout', () => resolve({ status: 'timeout', response: null }));
        });
    }

    /** Writes one raw text frame (for malformed-frame tests). */
    sendRaw(text) {
        if (!this.socket.isConnected()) throw new Error('sendRaw: not connected');
        this.socket.conn.send(text);
    }

    /** Round trip of a heartbeat ([null, ref, "phoenix", "heartbeat", {}]) in ms. */
    ping(timeoutMs = DEFAULT_TIMEOUT_MS) {
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(timeoutError('the heartbeat reply', timeoutMs)), timeoutMs);
            const sent = this.socket.ping((rtt) => {
                clearTimeout(timer);
                resolve(rtt);
            });
            if (!sent) {
                clearTimeout(timer);
                reject(new Error('ping: not connected'));
            }
        });
    }

    isConnected() {
        return !!this.socket && this.socket.isConnected();
    }

    /** Disconnects for good (close code 1000 by default); resolves once the socket is closed. */
    close(code = 1000, reason = '') {
        return new Promise((resolve) => {
            if (this.ended) {
                resolve();
                return;
            }
            this.ended = true;
            for (const w of this._pushWaiters.splice(0)) {
                clearTimeout(w.timer);
                w.reject(new Error(`no "${w.event}" push: device closed`));
            }
            for (const w of this._joinWaiters.splice(0)) {
                clearTimeout(w.timer);
                w.reject(new Error('no rejoin: device closed'));
            }
            this.socket.disconnect(() => resolve(), code, reason);
        });
    }
}

/**
 * Connects a device over mutual TLS and joins topic "device". Resolves with a DeviceConnection
 * once the join is acknowledged; rejects with an Error whose `kind` is
 * 'upgrade' (HTTP refusal: `status`, `headers`, `body`), 'tls' (`alert`), 'connection',
 * 'join' (`response`), 'closed' or 'timeout'. Never retries for ever: reconnects are off unless
 * `reconnect: true`, and then at most `maxReconnects` (default 3).
 *
 * Options: url ('wss://localhost:4001'), socketPath ('/socket' or '/device-socket'; the HTTP
 * mount, Phoenix appends '/websocket?vsn=2.0.0'), cert, key, ca (PEM strings or Buffers; cert
 * may be leaf + intermediates), servername, headers (upgrade request headers, e.g. x-nh-*),
 * params (query params), joinPayload (default nervesHubLinkJoinPayload()), topic ('device'),
 * connectTimeoutMs (5000; also the join and request timeout), heartbeatIntervalMs (30000),
 * reconnect, maxReconnects, reconnectAfterMs, rejoinAfterMs, rejectUnauthorized (true),
 * perMessageDeflate (true), debug (or env OTAHUB_E2E_DEBUG=1).
 */
function connectDevice(opts) {
    return new DeviceConnection(opts)._connect();
}

function parseHead(head) {
    const lines = head.split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0]);
    if (!m) return null;
    const headers = {};
    for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon <= 0) continue;
        const name = line.slice(0, colon).trim().toLowerCase();
        const value = line.slice(colon + 1).trim();
        headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
    }
    return { status: Number(m[1]), statusText: m[2] ?? '', headers };
}

/**
 * Attempts one WebSocket upgrade over raw TLS and reports what came back, without ever
 * rejecting: {status, statusText, headers (lower-case names), body, accepted (101 with a correct
 * Sec-WebSocket-Accept), tlsProtocol, secureConnected, error, code, alert (TLS alert text such
 * as 'unknown ca' or 'certificate required'), timedOut}. `headers` given as null remove a
 * default header (e.g. {'sec-websocket-key': null}).
 */
function rawUpgrade({
    host = 'localhost',
    port,
    path = '/socket/websocket?vsn=2.0.0',
    cert,
    key,
    ca,
    servername,
    headers = {},
    method = 'GET',
    rejectUnauthorized = true,
    minVersion,
    maxVersion,
    timeoutMs = DEFAULT_TIMEOUT_MS,
} = {}) {
    return new Promise((resolve) => {
        const wsKey = crypto.randomBytes(16).toString('base64');
        const result = {
            status: null,
            statusText: null,
            headers: {},
            body: '',
            accepted: false,
            tlsProtocol: null,
            secureConnected: false,
            error: null,
            code: null,
            alert: null,
            timedOut: false,
        };
        let buffer = Buffer.alloc(0);
        let head = null;
        let done = false;
        const socket = tls.connect({
            host,
            port,
            cert,
            key,
            ca,
            servername: servername ?? (net.isIP(host) ? undefined : host),
            rejectUnauthorized,
            minVersion,
            maxVersion,
        });
        const finish = () => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            if (head) result.body = buffer.toString('utf8');
            socket.destroy();
            resolve(result);
        };
        const timer = setTimeout(() => {
            result.timedOut = true;
            result.error = result.error ?? `timeout after ${timeoutMs} ms`;
            finish();
        }, timeoutMs);

        socket.on('secureConnect', () => {
            result.secureConnected = true;
            result.tlsProtocol = socket.getProtocol();
            const defaults = {
                host: `${host}:${port}`,
                upgrade: 'websocket',
                connection: 'Upgrade',
                'sec-websocket-key': wsKey,
                'sec-websocket-version': '13',
            };
            const merged = { ...defaults };
            for (const [name, value] of Object.entries(headers)) merged[name.toLowerCase()] = value;
            let request = `${method} ${path} HTTP/1.1\r\n`;
            for (const [name, value] of Object.entries(merged)) {
                if (value !== null && value !== undefined) request += `${name}: ${value}\r\n`;
            }
            socket.write(`${request}\r\n`);
        });
        socket.on('data', (chunk) => {
            buffer = Buffer.concat([buffer, chunk]);
            if (!head) {
                const end = buffer.indexOf('\r\n\r\n');
                if (end === -1) return;
                head = parseHead(buffer.subarray(0, end).toString('latin1'));
                buffer = buffer.subarray(end + 4);
                if (!head) {
                    result.error = 'malformed HTTP response';
                    finish();
                    return;
                }
                Object.assign(result, head);
                if (head.status === 101) {
                    const expected = crypto.createHash('sha1').update(wsKey + WS_GUID).digest('base64');
                    result.accepted = head.headers['sec-websocket-accept'] === expected;
                    buffer = Buffer.alloc(0); // anything after is WebSocket frames
                    finish();
                    return;
                }
            }
            const length = Number(result.headers['content-length']);
            if (Number.isFinite(length) && buffer.length >= length) finish();
            else if (/chunked/i.test(result.headers['transfer-encoding'] ?? '') && buffer.includes('0\r\n\r\n')) finish();
        });
        socket.on('error', (err) => {
            result.error = err.message.trim();
            result.code = err.code ?? null;
            result.alert = tlsAlertOf(err);
            finish();
        });
        socket.on('end', finish);
        socket.on('close', finish);
    });
}

module.exports = {
    connectDevice,
    DeviceConnection,
    nervesHubLinkJoinPayload,
    rawUpgrade,
    tlsAlertOf,
    DEVICE_TOPIC,
};
