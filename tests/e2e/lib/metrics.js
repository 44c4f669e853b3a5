'use strict';
// Reading the hub's Prometheus text exposition (GET /metrics) in tests.

/**
 * The value of the sample `name{labels}` in a /metrics body, or null when there is none.
 * `labels` is the label set exactly as the hub prints it (e.g. '{method="legacy"}'), or ''.
 */
function sample(text, name, labels = '') {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? null : Number(line.slice(line.lastIndexOf(' ') + 1));
}

module.exports = { sample };
