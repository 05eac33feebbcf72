// runtime.js -- node's `coap` package creates, reads, observes and removes a run-time
// resource (tests/integration/test_runtime.py, tests/lua/runtime.lua):
//
//   node runtime.js HOST PORT
//
// Prints one JSON line per step: discovery before, the POST's code and Location-Path, a
// GET of the new resource, the observation's first answer, the DELETE's code, the code of
// the observation's last message (the final 4.04: the package filters it out of the data
// stream as an old sequence number, but its code reaches the response), discovery after.
'use strict';
const coap = require('coap');

const [host, port] = process.argv.slice(2);
const agent = new coap.Agent({ type: host.includes(':') ? 'udp6' : 'udp4' });
const base = { host, port: parseInt(port, 10), agent };
setTimeout(() => { console.error('timeout'); process.exit(1); }, 10000);

function call(opts, payload) {
  return new Promise((resolve, reject) => {
    const req = coap.request(Object.assign({}, base, opts));
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ res, payload: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

function out(o) { console.log(JSON.stringify(o)); }

async function main() {
  let r = await call({ pathname: '/.well-known/core' });
  out({ step: 'discovery', links: r.payload });
  r = await call({ pathname: '/things', method: 'POST' }, 'from node');
  const loc = r.res.options.filter((o) => o.name === 'Location-Path')
    .map((o) => o.value.toString());
  out({ step: 'post', code: r.res.code, location: loc });
  const path = '/' + loc.join('/');
  r = await call({ pathname: path });
  out({ step: 'get', code: r.res.code, payload: r.payload });
  const obs = coap.request(Object.assign({}, base, { pathname: path, observe: true }));
  obs.on('response', (res) => {
    res.once('data', async (c) => {
      out({ step: 'observe', code: res.code, payload: c.toString() });
      const d = await call({ pathname: path, method: 'DELETE' });
      out({ step: 'delete', code: d.res.code });
      const until = Date.now() + 3000;
      while (res.code === '2.05' && Date.now() < until) {
        await new Promise((ok) => setTimeout(ok, 20));
      }
      out({ step: 'final', code: res.code });
      const g = await call({ pathname: path });
      out({ step: 'get-after', code: g.res.code });
      const w = await call({ pathname: '/.well-known/core' });
      out({ step: 'discovery-after', links: w.payload });
      process.exit(0);
    });
  });
  obs.end();
}
main().catch((e) => { console.error(e.message); process.exit(1); });
