'use strict';
// Shared set-up for device endpoint tests: a hub, an admin token, a product, a test PKI, and
// helpers to register CAs, connect devices and wait for trust changes to reach the handshake.
const fs = require('node:fs');
const { startHub } = require('./hub');
const { TestPki } = require('./pki');
const { connectDevice, rawUpgrade, nervesHubLinkJoinPayload } = require('./device_client');

/** Polls `probe` until it returns a truthy value; rejects with `what` after `timeoutMs`. */
async function eventually(probe, what, timeoutMs = 5000, intervalMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

class DeviceFixture {
  constructor(hub, token, pki) {
    this.hub = hub;
    this.token = token;
    this.pki = pki;
    this.serverCa = fs.readFileSync(hub.certs.ca);
    this.url = `wss://localhost:${hub.devicePort}`;
  }

  /** Registers `ca` for org acme (optionally with a JITP profile) and waits until it is trusted. */
  async registerCa(ca, { jitp = null, org = 'acme', token = this.token, wait = true } = {}) {
    const tokenRes = await this.hub.request('GET', `/api/orgs/${org}/ca_certificates/verification_token`, { token });
    if (tokenRes.status !== 200) throw new Error(`verification_token: ${tokenRes.status} ${tokenRes.text}`);
    const verification = ca.issueVerification(tokenRes.body.data.verification_token);
    const res = await this.hub.request('POST', `/api/orgs/${org}/ca_certificates`, {
      token,
      body: { cert: ca.base64, verification_cert: verification.base64, description: ca.name, jitp },
    });
    if (res.status !== 201) throw new Error(`register CA: ${res.status} ${res.text}`);
    if (wait) await this.waitForTrust(ca, true);
    return res.body.data;
  }

  /**
   * Waits until the handshake trusts (or no longer trusts) `ca`, probing with a serverAuth-only
   * leaf: refused as 'unsupported certificate' when the CA is trusted, 'unknown ca' when not,
   * without creating anything.
   */
  async waitForTrust(ca, trusted = true, timeoutMs = 5000) {
    if (!ca._probe) ca._probe = ca.issueLeaf({ cn: 'trust-probe', eku: 'server' });
    const want = trusted ? 'unsupported certificate' : 'unknown ca';
    await eventually(async () => (await this.upgrade(ca._probe)).alert === want,
      `CA ${ca.name} to become ${trusted ? 'trusted' : 'untrusted'}`, timeoutMs);
  }

  /** Waits until connecting with `leaf` gives the TLS alert `alert`. */
  async waitForAlert(leaf, alert, timeoutMs = 5000) {
    return eventually(async () => {
      const r = await this.upgrade(leaf);
      return r.alert === alert ? r : null;
    }, `alert "${alert}" for ${leaf.name}`, timeoutMs);
  }

  /** One raw websocket upgrade with `leaf` (its chain) over TLS; never rejects. */
  upgrade(leaf, options = {}) {
    return rawUpgrade({
      host: 'localhost',
      port: options.port ?? this.hub.devicePort,
      cert: leaf ? leaf.chainPem : undefined,
      key: leaf ? leaf.keyPem : undefined,
      ca: this.serverCa,
      timeoutMs: 5000,
      ...options,
    });
  }

  /** A Phoenix device connection joined to `device` (rejects on refusal; see device_client). */
  connect(leaf, options = {}) {
    return connectDevice({
      url: options.port ? `wss://localhost:${options.port}` : this.url,
      cert: leaf.chainPem,
      key: leaf.keyPem,
      ca: this.serverCa,
      joinPayload: options.joinPayload ?? nervesHubLinkJoinPayload(),
      connectTimeoutMs: 8000,
      ...options,
    });
  }

  /** GET a device of product `sensor` (or null on 404). */
  async device(identifier, product = 'sensor') {
    const res = await this.hub.request('GET',
      `/api/orgs/acme/products/${product}/devices/${encodeURIComponent(identifier)}`, { token: this.token });
    if (res.status === 404) return null;
    if (res.status !== 200) throw new Error(`GET device: ${res.status} ${res.text}`);
    return res.body.data;
  }

  api(method, path, body) {
    return this.hub.request(method, path, { token: this.token, body });
  }
}

/** Starts a hub with an admin, a product `sensor` and an empty PKI. */
async function startDeviceFixture(hubOptions = {}) {
  const hub = await startHub(hubOptions);
  const token = await hub.login();
  const product = await hub.request('POST', '/api/orgs/acme/products', { token, body: { name: 'sensor' } });
  if (product.status !== 201) throw new Error(`create product: ${product.status} ${product.text}`);
  return new DeviceFixture(hub, token, new TestPki());
}

module.exports = { startDeviceFixture, DeviceFixture, eventually };
