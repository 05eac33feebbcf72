// ws.js -- an independent WebSocket client (node's `ws` package) carrying CoAP messages in
// the RFC 8323 §4.4 format, for test_ws.py.
//
//   node ws.js URL [HEX ...]
//
// Opens URL with the subprotocol "coap" and prints one line "proto PROTOCOL", then sends
// each HEX (one CoAP message per WebSocket message, the CSM first as the caller gives it)
// and prints each message received as one line "< HEX", until as many messages came as
// were sent (plus the server's CSM), then closes (1000) and prints "closed CODE". Exits 1
// on an error or after 10 s.
'use strict';
const WebSocket = require('ws');

const [url, ...msgs] = process.argv.slice(2);
const ws = new WebSocket(url, 'coap');
let got = 0;
const timer = setTimeout(() => { console.error('timeout'); process.exit(1); }, 10000);

ws.on('open', () => {
  console.log(`proto ${ws.protocol}`);
  for (const m of msgs) ws.send(Buffer.from(m, 'hex'), { binary: true });
});
ws.on('message', (data, isBinary) => {
  console.log(`< ${isBinary ? '' : 'text:'}${Buffer.from(data).toString('hex')}`);
  if (++got >= msgs.length) ws.close(1000);
});
ws.on('close', (code) => {
  console.log(`closed ${code}`);
  clearTimeout(timer);
  process.exit(0);
});
ws.on('error', (e) => { console.error(`error ${e.message}`); process.exit(1); });
