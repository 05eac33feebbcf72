// observe.js -- an independent CoAP client (node's `coap` package) observing one resource.
//
//   node observe.js HOST PORT PATH COUNT [TIMEOUT_S]
//
// Registers with Observe 0, prints one JSON line per message received (the registration
// answer, then each notification): {"code": "2.05", "observe": N, "payload": "..."}, and
// exits 0 after COUNT of them (deregistering first), 1 on timeout or error.
'use strict';
const coap = require('coap');

const [host, port, path, count, timeoutS] = process.argv.slice(2);
const want = parseInt(count, 10);
let seen = 0;

const agent = new coap.Agent({ type: host.includes(':') ? 'udp6' : 'udp4' });
const req = coap.request({ host, port: parseInt(port, 10), pathname: path, observe: true,
                           agent });
const timer = setTimeout(() => {
  console.error(`timeout after ${seen} messages`);
  process.exit(1);
}, 1000 * parseFloat(timeoutS || '10'));

req.on('response', (res) => {
  // the registration's answer is the first 'data' event, each notification one more
  res.on('data', (chunk) => {
    console.log(JSON.stringify({ code: res.code, observe: res.headers.Observe,
                                 payload: chunk.toString() }));
    if (++seen >= want) done(res);
  });
});
req.on('error', (e) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
req.end();

function done(res) {
  clearTimeout(timer);
  res.close();          // deregisters (the package sends a GET with Observe 1 or an RST)
  setTimeout(() => process.exit(0), 200);
}
