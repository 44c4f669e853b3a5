'use strict';
// Contract checks against proto/openapi.yaml: every response a test gets can be checked to have a
// documented status for its route and a body (and headers) matching the documented schema.
//
//   const { contractClient } = require('./lib/contract');
//   const api = contractClient(hub);                 // wraps hub.request
//   const res = await api.request('GET', '/api/orgs', { token });   // throws ContractError
//   await api.expect(201, 'POST', '/api/orgs', { token, body: { name: 'x' } });
//   api.contract.coverageReport({ tags: ['orgs'] });  // which documented routes were exercised
//
// OpenAPI 3.1 schemas are JSON Schema 2020-12, validated with ajv/dist/2020 + ajv-formats.
const fs = require('node:fs');
const path = require('node:path');
const YAML = require('yaml');
const Ajv2020 = require('ajv/dist/2020');
const addFormats = require('ajv-formats');

const DEFAULT_SPEC = process.env.OTAHUB_OPENAPI ||
  path.resolve(__dirname, '..', '..', '..', 'proto', 'openapi.yaml');
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const SPEC_ID = 'otahub-openapi';
const REQUEST_ID = /^[0-9a-f]{16}$/;

/** A response that does not match the contract. */
class ContractError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ContractError';
  }
}

function escapePointer(token) {
  return String(token).replace(/~/g, '~0').replace(/\//g, '~1');
}

function unescapePointer(token) {
  return token.replace(/~1/g, '/').replace(/~0/g, '~');
}

function truncate(text, max = 600) {
  if (text === undefined || text === null) return String(text);
  const s = typeof text === 'string' ? text : JSON.stringify(text);
  return s.length > max ? `${s.slice(0, max)}... (${s.length} chars)` : s;
}

/** Splits a URL or path into decoded segments; null when the percent-encoding is broken. */
function pathSegments(urlOrPath) {
  let p = urlOrPath;
  if (/^[a-z]+:\/\//i.test(p)) p = new URL(p).pathname;
  p = p.split('?')[0].split('#')[0];
  const raw = p.replace(/^\//, '').split('/');
  if (raw.length > 1 && raw[raw.length - 1] === '') raw.pop();
  try {
    return raw.map((s) => decodeURIComponent(s));
  } catch (_) {
    return null;
  }
}

class Contract {
  constructor(specPath = DEFAULT_SPEC) {
    this.specPath = specPath;
    this.spec = YAML.parse(fs.readFileSync(specPath, 'utf8'));
    this.ajv = new Ajv2020({ allErrors: true, strict: false, validateSchema: false });
    addFormats(this.ajv);
    this.ajv.addSchema(this.spec, SPEC_ID);
    this.validators = new Map();
    this.routes = [];   // {method, template, segments, operation, pointer}
    for (const [template, item] of Object.entries(this.spec.paths || {})) {
      for (const method of METHODS) {
        if (!item[method]) continue;
        this.routes.push({
          method: method.toUpperCase(),
          template,
          segments: template.replace(/^\//, '').split('/'),
          operation: item[method],
          pointer: `#/paths/${escapePointer(template)}/${method}`,
        });
      }
    }
    this.exercised = new Map();   // "METHOD template" -> Set of statuses
  }

  /** The object a local "#/..." reference points to. */
  resolve(ref) {
    let node = this.spec;
    for (const token of ref.replace(/^#\//, '').split('/')) {
      node = node === undefined ? undefined : node[unescapePointer(token)];
    }
    if (node === undefined) throw new ContractError(`unresolved reference ${ref} in ${this.specPath}`);
    return node;
  }

  /** Follows $ref chains; returns {node, pointer} of the final object. */
  deref(node, pointer) {
    let seen = 0;
    while (node && typeof node.$ref === 'string') {
      if (++seen > 20) throw new ContractError(`reference loop at ${pointer}`);
      pointer = node.$ref;
      node = this.resolve(pointer);
    }
    return { node, pointer };
  }

  /** A compiled validator for the schema at a JSON pointer inside the spec. */
  validatorAt(pointer) {
    let validate = this.validators.get(pointer);
    if (!validate) {
      // URI fragment: each pointer token percent-encoded ("{org}" is not a URI character).
      const fragment = pointer.replace(/^#/, '').split('/').map((t) => encodeURIComponent(t)).join('/');
      validate = this.ajv.compile({ $ref: `${SPEC_ID}#${fragment}` });
      this.validators.set(pointer, validate);
    }
    return validate;
  }

  /** Validates `value` against a component schema by name; throws ContractError. */
  validateSchema(name, value, context = `schema ${name}`) {
    const pointer = `#/components/schemas/${escapePointer(name)}`;
    this.resolve(pointer);
    this.runValidator(pointer, value, context);
  }

  runValidator(pointer, value, context) {
    const validate = this.validatorAt(pointer);
    if (!validate(value)) {
      const details = validate.errors.map((e) => {
        const where = e.instancePath || '(root)';
        const extra = e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : '';
        return `    ${where} ${e.message}${extra} [${e.schemaPath}]`;
      });
      throw new ContractError(`${context} does not match ${pointer}:\n${details.join('\n')}\n` +
        `  value: ${truncate(value)}`);
    }
  }

  /**
   * The documented route for a method and a path template ("/api/orgs/{org}") or a concrete
   * path/URL ("/api/orgs/acme?x=1"). Literal segments win over parameters. Null when none.
   */
  findRoute(method, pathTemplateOrUrl) {
    const m = method.toUpperCase();
    // Like the server's router: the best match among the routes of this method.
    return this.matchPath(pathTemplateOrUrl).find((r) => r.method === m) || null;
  }

  /** Every documented route (any method) whose template matches the path, best match first. */
  matchPath(pathTemplateOrUrl) {
    const byTemplate = this.routes.filter((r) => r.template === pathTemplateOrUrl);
    if (byTemplate.length > 0) return byTemplate;
    const segments = pathSegments(pathTemplateOrUrl);
    if (!segments) return [];
    const scored = [];
    for (const route of this.routes) {
      if (route.segments.length !== segments.length) continue;
      let score = 0;
      let ok = true;
      for (let i = 0; i < segments.length && ok; ++i) {
        const want = route.segments[i];
        if (/^\{[^}]+\}$/.test(want)) {
          ok = segments[i] !== '';
        } else if (want === segments[i]) {
          score += 1;
        } else {
          ok = false;
        }
      }
      if (ok) scored.push({ route, score });
    }
    // More literal segments first ("/verification_token" before "/{serial}"); stable otherwise.
    return scored.sort((a, b) => b.score - a.score).map((s) => s.route);
  }

  /**
   * Checks one response against the contract and records the route as exercised.
   * `headers` are Node's lower-cased response headers; `body` the parsed JSON (or null);
   * options.text the raw body for messages. Returns the matched route. Throws ContractError.
   */
  checkResponse(method, pathTemplateOrUrl, status, headers = {}, body = null, options = {}) {
    const route = this.checkOnly(method, pathTemplateOrUrl, status, headers, body, options);
    const key = `${route.method} ${route.template}`;
    if (!this.exercised.has(key)) this.exercised.set(key, new Set());
    this.exercised.get(key).add(status);
    return route;
  }

  checkOnly(method, pathTemplateOrUrl, status, headers, body, options) {
    const label = `${method.toUpperCase()} ${pathTemplateOrUrl} -> ${status}`;
    const shownBody = options.text !== undefined ? options.text : body;
    const route = this.findRoute(method, pathTemplateOrUrl);
    if (!route) {
      const others = this.matchPath(pathTemplateOrUrl).map((r) => r.method);
      throw new ContractError(`${label}: no documented route` +
        (others.length ? ` for this method (documented: ${[...new Set(others)].join(', ')})` : '') +
        `\n  body: ${truncate(shownBody)}`);
    }
    const key = `${route.method} ${route.template}`;

    const responses = route.operation.responses || {};
    const code = String(status);
    const rangeCode = `${code[0]}XX`;
    const name = [code, rangeCode, 'default'].find((k) => responses[k] !== undefined);
    if (!name) {
      throw new ContractError(`${label}: status ${status} is not documented for ${key} ` +
        `(documented: ${Object.keys(responses).join(', ')})\n  body: ${truncate(shownBody)}`);
    }
    const { node: response, pointer } = this.deref(responses[name],
      `${route.pointer}/responses/${escapePointer(name)}`);

    if (options.requireRequestId !== false) {
      const id = headers['x-request-id'];
      if (typeof id !== 'string' || !REQUEST_ID.test(id)) {
        throw new ContractError(`${label}: x-request-id header missing or malformed: ${truncate(id)}`);
      }
    }
    for (const [headerName, rawHeader] of Object.entries(response.headers || {})) {
      const lower = headerName.toLowerCase();
      const { node: header, pointer: headerPointer } = this.deref(rawHeader,
        `${pointer}/headers/${escapePointer(headerName)}`);
      const value = headers[lower];
      if (value === undefined) {
        if (header.required) throw new ContractError(`${label}: required header ${lower} missing`);
        continue;
      }
      if (header.schema) {
        this.runValidator(`${headerPointer}/schema`, value, `${label}: header ${lower}`);
      }
    }

    const content = response.content || {};
    const mediaTypes = Object.keys(content);
    const hasBody = !(body === null || body === undefined || body === '') ||
      (options.text !== undefined && options.text !== '');
    if (mediaTypes.length === 0) {
      if (hasBody) throw new ContractError(`${label}: documented without a body, got ${truncate(shownBody)}`);
      return route;
    }
    const contentType = String(headers['content-type'] || '').split(';')[0].trim().toLowerCase();
    const mediaType = mediaTypes.find((t) => t.toLowerCase() === contentType) ||
      mediaTypes.find((t) => t.endsWith('/*') && contentType.startsWith(t.slice(0, -1))) ||
      mediaTypes.find((t) => t === '*/*');
    if (!mediaType) {
      throw new ContractError(`${label}: content-type '${contentType}' is not documented ` +
        `(documented: ${mediaTypes.join(', ')})`);
    }
    if (/json/.test(mediaType)) {
      if ((body === null || body === undefined) && options.text !== undefined && options.text !== 'null') {
        throw new ContractError(`${label}: body is not JSON: ${truncate(options.text)}`);
      }
      if (content[mediaType].schema) {
        const schemaPointer = `${pointer}/content/${escapePointer(mediaType)}/schema`;
        this.runValidator(schemaPointer, body, `${label}: body`);
      }
    }
    return route;
  }

  /**
   * For answers of undocumented routes (404 unknown path, 405 wrong method): the status is an
   * error and the body is the Error envelope, with an x-request-id.
   */
  checkErrorResponse(method, url, status, headers = {}, body = null) {
    const label = `${method.toUpperCase()} ${url} -> ${status}`;
    if (status < 400) throw new ContractError(`${label}: expected an error status`);
    if (!REQUEST_ID.test(String(headers['x-request-id'] || ''))) {
      throw new ContractError(`${label}: x-request-id header missing or malformed`);
    }
    this.validateSchema('Error', body, `${label}: body`);
  }

  /** Documented routes, each with whether (and with which statuses) it was exercised. */
  coverage({ tags } = {}) {
    return this.routes
      .filter((r) => !tags || (r.operation.tags || []).some((t) => tags.includes(t)))
      .map((r) => {
        const statuses = this.exercised.get(`${r.method} ${r.template}`);
        return {
          method: r.method,
          path: r.template,
          operationId: r.operation.operationId,
          tags: r.operation.tags || [],
          exercised: Boolean(statuses),
          statuses: statuses ? [...statuses].sort() : [],
        };
      });
  }

  /** The coverage as text, one route a line, with a total. */
  coverageReport(options = {}) {
    const rows = this.coverage(options);
    const lines = rows.map((r) => `${r.exercised ? '[x]' : '[ ]'} ${r.method.padEnd(6)} ${r.path}` +
      (r.exercised ? `  (${r.statuses.join(', ')})` : ''));
    const done = rows.filter((r) => r.exercised).length;
    lines.push(`${done}/${rows.length} documented routes exercised`);
    return lines.join('\n');
  }
}

let shared = null;

/** The contract of proto/openapi.yaml, loaded once per process (coverage accumulates in it). */
function loadContract(specPath) {
  if (specPath) return new Contract(specPath);
  if (!shared) shared = new Contract();
  return shared;
}

/**
 * Wraps a hub (tests/e2e/lib/hub.js) so every response is contract-checked:
 *   request(method, path, opts)        -> response (checked); opts as hub.request
 *   expect(status, method, path, opts) -> response (checked, and the status must be `status`)
 *   undocumented(method, path, opts)   -> response of a route the spec does not have (checked
 *                                          to be an error in the Error envelope)
 */
function contractClient(hub, contract = loadContract()) {
  const client = {
    contract,
    hub,
    async request(method, urlPath, opts = {}) {
      const res = await hub.request(method, urlPath, opts);
      contract.checkResponse(method, urlPath, res.status, res.headers, res.body, { text: res.text });
      return res;
    },
    async expect(status, method, urlPath, opts = {}) {
      const res = await client.request(method, urlPath, opts);
      if (res.status !== status) {
        throw new ContractError(`${method} ${urlPath}: expected ${status}, got ${res.status}: ` +
          truncate(res.text));
      }
      return res;
    },
    async undocumented(method, urlPath, opts = {}) {
      const res = await hub.request(method, urlPath, opts);
      contract.checkErrorResponse(method, urlPath, res.status, res.headers, res.body);
      return res;
    },
  };
  return client;
}

/** checkResponse against the shared contract (see Contract#checkResponse). */
function checkResponse(method, pathTemplateOrUrl, status, headers, body, options) {
  return loadContract().checkResponse(method, pathTemplateOrUrl, status, headers, body, options);
}

/** Coverage of the shared contract as text (see Contract#coverageReport). */
function coverageReport(options) {
  return loadContract().coverageReport(options);
}

module.exports = {
  Contract, ContractError, loadContract, contractClient, checkResponse, coverageReport, DEFAULT_SPEC,
};
