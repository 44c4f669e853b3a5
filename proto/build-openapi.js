#!/usr/bin/env node
'use strict';
// Assembles the otahub OpenAPI description from proto/src/*.yaml into proto/openapi.yaml.
//
//   node proto/build-openapi.js            write proto/openapi.yaml
//   node proto/build-openapi.js --check    exit 1 when proto/openapi.yaml is not what the
//                                          fragments produce (stale or hand-edited)
//   --src DIR --out FILE                   other locations (tests of the assembler itself)
//
// common.yaml is the base (openapi, info, servers, security, tags, shared components). Every
// other fragment has top-level `paths:` and optionally `components:` and `tags:`. Fragments are
// merged in file-name order after common.yaml; the same path may appear in several fragments, but
// the same path + method, the same operationId, or one component name with two different
// definitions is an error. Paths and components come out sorted by name; methods in a fixed order.
// Exit codes: 0 ok, 1 stale (--check) or invalid fragments, 2 usage.

const fs = require('node:fs');
const path = require('node:path');
const { createRequire } = require('node:module');
const { isDeepStrictEqual } = require('node:util');

// npm packages live in tests/e2e (one package.json for all Node tooling).
const requireTool = createRequire(path.join(__dirname, '..', 'tests', 'e2e', 'package.json'));
const YAML = requireTool('yaml');

const BASE = 'common.yaml';
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const PATH_ITEM_FIELDS = new Set(['summary', 'description', 'parameters', 'servers', ...HTTP_METHODS]);
const FRAGMENT_KEYS = new Set(['paths', 'components', 'tags', 'openapi']);
const HEADER = [
  '# GENERATED FILE - do not edit. Source: proto/src/*.yaml; regenerate with',
  '#   node proto/build-openapi.js',
  '# (ctest integration.openapi fails when this file is stale).',
  '',
].join('\n');

class BuildError extends Error {}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function parseFragment(fullPath) {
  const file = path.relative(process.cwd(), fullPath) || fullPath;
  const text = fs.readFileSync(fullPath, 'utf8');
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new BuildError(`${file}: ${doc.errors.map((e) => e.message).join('\n')}`);
  }
  const value = doc.toJS({ maxAliasCount: 100 });
  if (!isObject(value)) throw new BuildError(`${file}: the top level must be a mapping`);
  return value;
}

/// Every local $ref ("#/a/b") inside `node`, with a JSON pointer to where it appears.
function collectRefs(node, where, out) {
  if (Array.isArray(node)) {
    node.forEach((item, i) => collectRefs(item, `${where}/${i}`, out));
  } else if (isObject(node)) {
    for (const [key, value] of Object.entries(node)) {
      if (key === '$ref' && typeof value === 'string') out.push({ ref: value, where });
      else collectRefs(value, `${where}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`, out);
    }
  }
  return out;
}

function resolvePointer(doc, ref) {
  if (!ref.startsWith('#/')) return undefined;
  let node = doc;
  for (const raw of ref.slice(2).split('/')) {
    const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (!isObject(node) && !Array.isArray(node)) return undefined;
    if (!Object.prototype.hasOwnProperty.call(node, key)) return undefined;
    node = node[key];
  }
  return node;
}

function sortedObject(object) {
  const out = {};
  for (const key of Object.keys(object).sort()) out[key] = object[key];
  return out;
}

/**
 * Merges the fragments in `srcDir` and returns the document (a plain object).
 * Throws BuildError listing every problem found.
 */
function assemble(srcDir) {
  const problems = [];
  const basePath = path.join(srcDir, BASE);
  if (!fs.existsSync(basePath)) throw new BuildError(`${basePath}: missing (the base fragment)`);
  const base = parseFragment(basePath);
  for (const key of ['openapi', 'info']) {
    if (base[key] === undefined) problems.push(`${BASE}: '${key}' is required in the base`);
  }
  const names = fs.readdirSync(srcDir)
    .filter((n) => /\.ya?ml$/.test(n) && n !== BASE)
    .sort();

  const doc = { ...base };
  const paths = {};
  const pathOrigin = {};        // "METHOD path" -> file
  const operationIds = {};      // operationId -> "file: METHOD path"
  const components = {};        // type -> name -> definition
  const componentOrigin = {};   // "type/name" -> file
  const tags = [];
  const tagOrigin = {};

  const addTags = (file, list) => {
    if (list === undefined) return;
    if (!Array.isArray(list)) {
      problems.push(`${file}: 'tags' must be a list`);
      return;
    }
    for (const tag of list) {
      if (!isObject(tag) || typeof tag.name !== 'string') {
        problems.push(`${file}: every tag needs a name`);
        continue;
      }
      const existing = tags.find((t) => t.name === tag.name);
      if (!existing) {
        tags.push(tag);
        tagOrigin[tag.name] = file;
      } else if (!isDeepStrictEqual(existing, tag)) {
        problems.push(`${file}: tag '${tag.name}' conflicts with the one in ${tagOrigin[tag.name]}`);
      }
    }
  };

  const addComponents = (file, section) => {
    if (section === undefined) return;
    if (!isObject(section)) {
      problems.push(`${file}: 'components' must be a mapping`);
      return;
    }
    for (const [type, entries] of Object.entries(section)) {
      if (!isObject(entries)) {
        problems.push(`${file}: components.${type} must be a mapping`);
        continue;
      }
      components[type] = components[type] || {};
      for (const [name, definition] of Object.entries(entries)) {
        const key = `${type}/${name}`;
        if (!(name in components[type])) {
          components[type][name] = definition;
          componentOrigin[key] = file;
        } else if (!isDeepStrictEqual(components[type][name], definition)) {
          problems.push(`${file}: components.${type}.${name} conflicts with the definition in ` +
            `${componentOrigin[key]} (rename one, or reference the shared one)`);
        }
      }
    }
  };

  const addPaths = (file, section) => {
    if (section === undefined) return;
    if (!isObject(section)) {
      problems.push(`${file}: 'paths' must be a mapping`);
      return;
    }
    for (const [route, item] of Object.entries(section)) {
      if (!route.startsWith('/')) problems.push(`${file}: path '${route}' must start with '/'`);
      if (!isObject(item)) {
        problems.push(`${file}: paths['${route}'] must be a mapping`);
        continue;
      }
      const merged = paths[route] || (paths[route] = {});
      for (const [field, value] of Object.entries(item)) {
        if (!PATH_ITEM_FIELDS.has(field) && !field.startsWith('x-')) {
          problems.push(`${file}: paths['${route}'].${field} is not a path item field`);
          continue;
        }
        if (HTTP_METHODS.includes(field)) {
          const key = `${field.toUpperCase()} ${route}`;
          if (pathOrigin[key]) {
            problems.push(`${file}: ${key} is already defined in ${pathOrigin[key]}`);
            continue;
          }
          pathOrigin[key] = file;
          const id = isObject(value) ? value.operationId : undefined;
          if (id !== undefined) {
            if (operationIds[id]) {
              problems.push(`${file}: operationId '${id}' of ${key} is already used by ${operationIds[id]}`);
            } else {
              operationIds[id] = `${file}: ${key}`;
            }
          }
          merged[field] = value;
        } else if (field in merged && !isDeepStrictEqual(merged[field], value)) {
          problems.push(`${file}: paths['${route}'].${field} differs from another fragment's`);
        } else {
          merged[field] = value;
        }
      }
    }
  };

  const fragments = [[BASE, base], ...names.map((n) => [n, parseFragment(path.join(srcDir, n))])];
  for (const [file, fragment] of fragments) {
    if (file !== BASE) {
      for (const key of Object.keys(fragment)) {
        if (!FRAGMENT_KEYS.has(key) && !key.startsWith('x-')) {
          problems.push(`${file}: top-level '${key}' is not allowed in a fragment ` +
            `(only paths, components, tags; the rest belongs in ${BASE})`);
        }
      }
      if (fragment.openapi !== undefined && fragment.openapi !== base.openapi) {
        problems.push(`${file}: openapi ${fragment.openapi} differs from ${BASE}'s ${base.openapi}`);
      }
    }
    addTags(file, fragment.tags);
    addComponents(file, fragment.components);
    addPaths(file, fragment.paths);
  }

  // Tags used by operations but declared nowhere are appended (sorted) so every tag is declared.
  const used = new Set();
  for (const item of Object.values(paths)) {
    for (const method of HTTP_METHODS) {
      for (const tag of (item[method] && item[method].tags) || []) used.add(tag);
    }
  }
  for (const tag of [...used].sort()) {
    if (!tags.some((t) => t.name === tag)) tags.push({ name: tag });
  }

  // Rebuild with a stable key order.
  const out = {};
  for (const key of ['openapi', 'info', 'jsonSchemaDialect', 'servers', 'security']) {
    if (doc[key] !== undefined) out[key] = doc[key];
  }
  if (tags.length > 0) out.tags = tags;
  for (const [key, value] of Object.entries(doc)) {
    if (!(key in out) && !['paths', 'components', 'tags', 'webhooks'].includes(key)) out[key] = value;
  }
  out.paths = {};
  for (const route of Object.keys(paths).sort()) {
    const item = paths[route];
    const ordered = {};
    for (const field of ['summary', 'description', 'servers', 'parameters']) {
      if (item[field] !== undefined) ordered[field] = item[field];
    }
    for (const method of HTTP_METHODS) if (item[method] !== undefined) ordered[method] = item[method];
    for (const field of Object.keys(item)) if (!(field in ordered)) ordered[field] = item[field];
    out.paths[route] = ordered;
  }
  if (doc.webhooks !== undefined) out.webhooks = doc.webhooks;
  out.components = {};
  for (const type of Object.keys(components).sort()) {
    out.components[type] = sortedObject(components[type]);
  }

  // Every local reference must resolve, named by the fragment it came from.
  for (const [file, fragment] of fragments) {
    for (const { ref, where } of collectRefs(fragment, '#', [])) {
      if (!ref.startsWith('#')) {
        problems.push(`${file}: ${where}: only local references are supported, got '${ref}'`);
      } else if (resolvePointer(out, ref) === undefined) {
        const type = ref.split('/')[2];
        const known = out.components[type] ? Object.keys(out.components[type]).join(', ') : '(none)';
        problems.push(`${file}: ${where}: unresolved $ref '${ref}' (components.${type}: ${known})`);
      }
    }
  }

  if (problems.length > 0) throw new BuildError(problems.join('\n'));
  return out;
}

/// The text of proto/openapi.yaml for a document.
function render(doc) {
  return HEADER + YAML.stringify(doc, {
    aliasDuplicateObjects: false,
    lineWidth: 100,
    minContentWidth: 40,
    singleQuote: true,
  });
}

function main(argv) {
  let check = false;
  let srcDir = path.join(__dirname, 'src');
  let outFile = path.join(__dirname, 'openapi.yaml');
  for (let i = 0; i < argv.length; ++i) {
    const arg = argv[i];
    if (arg === '--check') check = true;
    else if (arg === '--src' && i + 1 < argv.length) srcDir = path.resolve(argv[++i]);
    else if (arg === '--out' && i + 1 < argv.length) outFile = path.resolve(argv[++i]);
    else {
      process.stderr.write(`usage: build-openapi.js [--check] [--src DIR] [--out FILE]\n`);
      return 2;
    }
  }
  let text;
  try {
    text = render(assemble(srcDir));
  } catch (err) {
    if (!(err instanceof BuildError)) throw err;
    process.stderr.write(`build-openapi: invalid fragments:\n${err.message}\n`);
    return 1;
  }
  const relOut = path.relative(process.cwd(), outFile) || outFile;
  if (check) {
    const current = fs.existsSync(outFile) ? fs.readFileSync(outFile, 'utf8') : null;
    if (current !== text) {
      process.stderr.write(`build-openapi: ${relOut} is ${current === null ? 'missing' : 'stale'}; ` +
        'run: node proto/build-openapi.js\n');
      return 1;
    }
    process.stdout.write(`build-openapi: ${relOut} is up to date\n`);
    return 0;
  }
  const tmp = `${outFile}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, outFile);
  process.stdout.write(`build-openapi: wrote ${relOut} (${Object.keys(YAML.parse(text).paths).length} paths)\n`);
  return 0;
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));

module.exports = { assemble, render, BuildError };
