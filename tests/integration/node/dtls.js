// dtls.js -- an independent DTLS 1.2 PSK client for moonlet's coaps:// tests: node's
// `node-coap-client` package over `node-dtls-client` (a pure JavaScript DTLS stack, unrelated
// to GnuTLS, OpenSSL or libcoap).
//
//   node dtls.js [--observe SECONDS] [--timeout SECONDS] [--ciphers SUITE,...]
//                URI IDENTITY KEY [METHOD [PAYLOAD]]
//
//   URI       coaps://HOST:PORT/PATH[?QUERY]      METHOD   get (default), post, put, delete
//   IDENTITY  the PSK identity, KEY the key (UTF-8 text, as given on moonlet's `-d psk=ID:KEY`)
//
// One request: prints one JSON line
//   {"code": "2.05", "payload": "...", "format": N or null, "cipher": "TLS_PSK_..."}
// --observe SECONDS: registers (Observe 0), collects every message for SECONDS (the
// registration's answer first, then the notifications), prints them as one JSON line, a list of
//   {"code": ..., "payload": ..., "format": ...}
// then stops observing and closes the association (close_notify).
//
// "cipher" is the suite the server chose (read from node-dtls-client's record layer; null if
// that internal moves). --ciphers narrows the ClientHello to the named suites (node-dtls-client
// names, e.g. TLS_PSK_WITH_AES_128_CCM_8); by default it offers its 11 PSK suites.
// Every wait is bounded: a hard timeout (--timeout, default 10 s, on top of the observe time)
// prints "timeout" on stderr and exits 1; a failed handshake or request exits 1; usage exits 2.
// Exit 0 means a response arrived (whatever its code). The package keeps its sockets open: the
// script ends with CoapClient.reset(), which closes them (close_notify to the server) and lets
// node exit by itself within about a second; it exits 200 ms after that, to be quick.
// DEBUG=node-coap-client,node-dtls-client traces both layers on stderr.
// Quirks of the package: every request carries Content-Format 50 (application/json), a GET
// too; stopObserving() only forgets the token (the next notification is answered with RST).
// package.json overrides node-dtls-client's optional node-aead-crypto (a polyfill used only on
// node < 10 or Electron) with an empty package: the registry here serves only two of its 13
// per-platform binaries, and a lockfile without the others fails `npm ci`.
'use strict';
const { CoapClient } = require('node-coap-client');

function usage(msg) {
  if (msg) console.error(msg);
  console.error('usage: node dtls.js [--observe SECONDS] [--timeout SECONDS] [--ciphers A,B] ' +
                'URI IDENTITY KEY [METHOD [PAYLOAD]]');
  process.exit(2);
}

const args = process.argv.slice(2);
let observeS = null;
let timeoutS = 10;
let ciphers = null;
while (args.length && args[0].startsWith('--')) {
  const opt = args.shift();
  const val = args.shift();
  if (val === undefined) usage(`${opt} needs a value`);
  if (opt === '--observe') observeS = parseFloat(val);
  else if (opt === '--timeout') timeoutS = parseFloat(val);
  else if (opt === '--ciphers') ciphers = val.split(',');
  else usage(`unknown option ${opt}`);
}
if (args.length < 3 || args.length > 5) usage();
const [uri, identity, key, methodArg, payloadArg] = args;
const method = (methodArg || 'get').toLowerCase();
if (!['get', 'post', 'put', 'delete'].includes(method)) usage(`unknown method ${methodArg}`);
if (observeS !== null && !(observeS > 0)) usage('--observe wants a positive number');
if (!(timeoutS > 0)) usage('--timeout wants a positive number');

let url;
try {
  url = new URL(uri);
} catch (e) {
  usage(`bad URI ${uri}`);
}
if (url.protocol !== 'coaps:') usage('the URI must be coaps://');

const hardTimer = setTimeout(() => {
  console.error(`timeout after ${timeoutS + (observeS || 0)} s`);
  process.exit(1);
}, 1000 * (timeoutS + (observeS || 0)));

const params = { psk: { [identity]: key } };
if (ciphers) params.ciphers = ciphers;
CoapClient.setSecurityParams(url.hostname, params);

function fail(e) {
  console.error(`error: ${e && e.message ? e.message : e}`);
  process.exit(1);
}

function simple(res) {
  return { code: res.code.toString(), payload: res.payload ? res.payload.toString() : '',
           format: res.format === undefined ? null : res.format };
}

// the suite the server picked: node-dtls-client keeps it in the record layer's current epoch
function cipherName() {
  try {
    const suites = require('node-dtls-client/build/DTLS/CipherSuites').CipherSuites;
    for (const conn of CoapClient.connections.values()) {
      const rl = conn.socket.socket.recordLayer;
      const id = rl.epochs[rl.writeEpochNr].connectionState.cipherSuite.id;
      return Object.keys(suites).find((k) => isNaN(Number(k)) && suites[k].id === id) || null;
    }
  } catch (e) { /* an internal moved */ }
  return null;
}

function finish(line) {
  clearTimeout(hardTimer);
  console.log(JSON.stringify(line));
  CoapClient.reset();            // closes the socket: close_notify to the server
  // node would exit by itself once the package's timers run out: give the alert a moment
  // to leave, then exit at once
  setTimeout(() => process.exit(0), 200);
}

const body = payloadArg === undefined ? undefined : Buffer.from(payloadArg);

if (observeS === null) {
  CoapClient.request(url, method, body)
    .then((res) => finish(Object.assign(simple(res), { cipher: cipherName() })))
    .catch(fail);
} else {
  const seen = [];
  CoapClient.observe(url, method, (res) => seen.push(simple(res)), body)
    .then(() => {
      setTimeout(() => {
        CoapClient.stopObserving(url);   // forgets the token: a later notification gets RST
        finish(seen);
      }, 1000 * observeS);
    })
    .catch(fail);
}
