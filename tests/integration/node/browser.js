// browser.js -- CoAP over WebSockets (RFC 8323 §4) from a page in headless Chromium, driven
// by puppeteer-core, for test_browser.py.
//
//   node browser.js PLAN_JSON
//
// PLAN_JSON: {"chromium": "/usr/bin/chromium", "timeout": MS, "pages": [PAGE, ...]} with
// PAGE = {"origin": "http://app.example", "url": "ws://127.0.0.1:PORT/.well-known/coap",
// "scenario": "hello" | "observe" | "block", ...scenario arguments}. Each page is opened in
// turn in one browser: every request of the page's origin is answered by request
// interception with a tiny HTML page (nothing leaves the machine: the host resolver maps
// every name to nowhere), so the page has that origin; then the page's own script (pageMain
// below, with its CoAP encoder and decoder) opens `new WebSocket(url, "coap")` and runs the
// scenario. Prints one line of JSON, {"pages": [RESULT, ...]}, where RESULT holds what the
// page saw:
//   origin     the page's location.origin
//   opened     whether the WebSocket opened; protocol: its agreed subprotocol
//   events     "open", "error", "close" in the order they came
//   msgs       every message received, in order, as hex (RFC 8323 §4.4 bytes as they came)
//   sent       every message sent, as hex
//   close      {code, reason, wasClean} of the close event
//   error      a string when the scenario failed in the page (a timeout, a bad message)
//   ...        the scenario's own fields (see the scenarios)
// Exits 0 when every page ran (whatever it saw: the test judges), 1 on a driver error or
// after the plan's timeout.
'use strict';
const puppeteer = require('puppeteer-core');

const plan = JSON.parse(process.argv[2] || '{}');
const TOTAL = plan.timeout || 30000;

const killer = setTimeout(() => {
  console.error(`browser.js: timeout after ${TOTAL} ms`);
  process.exit(1);
}, TOTAL);

// ---- what runs in the page ------------------------------------------------------------
// Serialised by puppeteer (Function.prototype.toString): everything it needs is inside.
async function pageMain(p) {
  const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');
  const utf8 = (s) => new TextEncoder().encode(s);
  const uint = (v) => {             // RFC 7252 §3.2 uint: minimal length, 0 is empty
    const out = [];
    for (; v > 0; v = Math.floor(v / 256)) out.unshift(v % 256);
    return new Uint8Array(out);
  };
  const toUint = (u8) => u8.reduce((a, b) => a * 256 + b, 0);

  // one option's delta or length -> [nibble, extension bytes]
  const nibble = (n) => n < 13 ? [n, []] : n < 269 ? [13, [n - 13]]
    : [14, [(n - 269) >> 8, (n - 269) & 255]];

  // RFC 8323 §4.4: Len 0 | TKL, Code, Token, Options, 0xFF Payload
  function encode(code, token, options, payload) {
    const out = [token.length, code, ...token];
    let prev = 0;
    for (const [num, val] of [...options].sort((a, b) => a[0] - b[0])) {
      const [dn, dx] = nibble(num - prev);
      const [ln, lx] = nibble(val.length);
      out.push(dn << 4 | ln, ...dx, ...lx, ...val);
      prev = num;
    }
    if (payload && payload.length) out.push(0xff, ...payload);
    return new Uint8Array(out);
  }

  function decode(buf) {
    const b = new Uint8Array(buf);
    if (b.length < 2) throw new Error(`short message ${hex(b)}`);
    if (b[0] >> 4) throw new Error(`Len nibble ${b[0] >> 4} in ${hex(b)}`);
    const tkl = b[0] & 15;
    if (tkl > 8 || b.length < 2 + tkl) throw new Error(`bad TKL in ${hex(b)}`);
    const m = { code: b[1], token: hex(b.subarray(2, 2 + tkl)), options: [],
      payload: new Uint8Array(0) };
    let i = 2 + tkl;
    let num = 0;
    const ext = (nib) => {
      if (nib < 13) return nib;
      if (nib === 13 && i < b.length) return b[i++] + 13;
      if (nib === 14 && i + 1 < b.length) { i += 2; return (b[i - 2] << 8 | b[i - 1]) + 269; }
      throw new Error(`bad option nibble in ${hex(b)}`);
    };
    while (i < b.length) {
      if (b[i] === 0xff) {
        if (i + 1 === b.length) throw new Error(`payload marker, no payload: ${hex(b)}`);
        m.payload = b.subarray(i + 1);
        m.head = b.subarray(0, i);     // the message without its payload
        break;
      }
      const dn = b[i] >> 4;
      const ln = b[i] & 15;
      i++;
      num += ext(dn);
      const n = ext(ln);
      if (i + n > b.length) throw new Error(`option past the end in ${hex(b)}`);
      m.options.push([num, b.subarray(i, i + n)]);
      i += n;
    }
    if (!m.head) m.head = b;
    m.opt = (k) => { const o = m.options.find(([n]) => n === k); return o ? o[1] : null; };
    return m;
  }

  const CSM = 0xe1;
  const GET = 0x01;
  const URI_PATH = 11;
  const OBSERVE = 6;
  const BLOCK2 = 23;
  const path = (s) => s.split('/').filter((x) => x).map((x) => [URI_PATH, utf8(x)]);
  const tok = (s) => Uint8Array.from(s.match(/../g).map((x) => parseInt(x, 16)));

  const r = { origin: location.origin, opened: false, protocol: null, events: [], msgs: [],
    sent: [], close: null, error: null };
  const deadline = Date.now() + (p.timeout || 10000);
  let ws;
  const queue = [];         // decoded messages not taken yet
  let wake = null;          // resolves the waiter when a message or the close comes
  const poke = () => { if (wake) { const w = wake; wake = null; w(); } };
  let closed;
  const closedP = new Promise((res) => { closed = res; });

  function send(code, token, options, payload) {
    const m = encode(code, token, options, payload);
    r.sent.push(hex(m));
    ws.send(m);
  }

  // the next message received, or an error at the close or the deadline
  async function next(what) {
    for (;;) {
      if (queue.length) return queue.shift();
      if (r.close) throw new Error(`closed (${r.close.code}) while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for ${what}`);
      let t;
      await new Promise((res) => { wake = res; t = setTimeout(res, left); });
      clearTimeout(t);
    }
  }

  // the next message with this token (others stay recorded in r.msgs, not taken)
  async function reply(token, what) {
    for (;;) {
      const m = await next(what);
      if (m.token === token) return m;
    }
  }

  async function closeAndWait(code) {
    ws.close(code);
    const left = deadline - Date.now();
    let t;
    await Promise.race([closedP, new Promise((res) => { t = setTimeout(res, Math.max(0, left)); })]);
    clearTimeout(t);
    if (!r.close) throw new Error('no close event after close()');
  }

  try {
    ws = new WebSocket(p.url, 'coap');
    ws.binaryType = 'arraybuffer';
    const opened = await new Promise((res) => {
      ws.onopen = () => { r.events.push('open'); res(true); };
      ws.onerror = () => { r.events.push('error'); res(false); };
      ws.onclose = (e) => {
        r.events.push('close');
        r.close = { code: e.code, reason: e.reason, wasClean: e.wasClean };
        closed();
        poke();
        res(false);
      };
      ws.onmessage = (e) => {
        if (!(e.data instanceof ArrayBuffer)) {
          r.msgs.push(`text:${e.data}`);
          r.error = r.error || 'a text message';
          poke();
          return;
        }
        r.msgs.push(hex(new Uint8Array(e.data)));
        try {
          queue.push(decode(e.data));
        } catch (err) {
          r.error = r.error || String(err.message);
        }
        poke();
      };
      setTimeout(() => res(false), Math.max(0, deadline - Date.now()));
    });
    r.opened = opened;
    if (!opened) {
      // a refused upgrade: the error, then the close (1006) -- wait for that close
      if (!r.close) {
        let t;
        await Promise.race([closedP, new Promise((res) => {
          t = setTimeout(res, Math.max(0, deadline - Date.now()));
        })]);
        clearTimeout(t);
      }
      return r;
    }
    r.protocol = ws.protocol;
    // RFC 8323 §5.3: each side's CSM first; ours may be empty
    send(CSM, new Uint8Array(0), [], null);
    const first = await next("the server's CSM");
    if (first.code !== CSM) throw new Error(`first message is not a CSM: ${r.msgs[0]}`);

    if (p.scenario === 'hello') {
      const t = tok(p.token);
      send(GET, t, path(p.path), null);
      const m = await reply(p.token, `the answer to GET ${p.path}`);
      r.answer = r.msgs.length - 1;      // its index in msgs
      r.text = new TextDecoder().decode(m.payload);
      await closeAndWait(1000);
    } else if (p.scenario === 'observe') {
      // register (Observe 0), take `count` notifications, deregister (Observe 1); then
      // register a second token and take two of its notifications: the clock ticked at
      // least once after the deregistration, and the first token must have had nothing
      const t1 = tok(p.token);
      const t2 = tok(p.token2);
      send(GET, t1, [[OBSERVE, uint(0)], ...path(p.path)], null);
      await reply(p.token, 'the registration answer');
      for (let k = 0; k < p.count; k++) await reply(p.token, `notification ${k + 1}`);
      send(GET, t1, [[OBSERVE, uint(1)], ...path(p.path)], null);
      r.dereg_sent = r.msgs.length;      // msgs from here on came after the deregistration
      const d = await reply(p.token, 'the deregistration answer');
      r.dereg = r.msgs.length - 1;
      r.dereg_observe = d.opt(OBSERVE) ? toUint(d.opt(OBSERVE)) : null;
      send(GET, t2, [[OBSERVE, uint(0)], ...path(p.path)], null);
      for (let k = 0; k < 3; k++) await reply(p.token2, `second observer's message ${k + 1}`);
      await closeAndWait(1000);
    } else if (p.scenario === 'block') {
      // Block2 (RFC 7959 §2.4) one block after the other, SZX szx, assembled here
      const size = 16 << p.szx;
      const parts = [];
      r.blocks = [];
      for (let num = 0; ; num++) {
        const t = tok(p.token);
        send(GET, t, [...path(p.path), [BLOCK2, uint(num << 4 | p.szx)]], null);
        const m = await reply(p.token, `block ${num}`);
        const b2 = m.opt(BLOCK2);
        const v = b2 ? toUint(b2) : null;
        r.blocks.push({ code: m.code, num: v === null ? null : Math.floor(v / 16),
          more: v === null ? null : (v >> 3) & 1, szx: v === null ? null : v & 7,
          len: m.payload.length, etag: m.opt(4) ? hex(m.opt(4)) : null, head: hex(m.head) });
        if (m.code !== 0x45 || v === null || Math.floor(v / 16) !== num) break;
        parts.push(m.payload);
        if (!((v >> 3) & 1)) break;
        if (m.payload.length !== size) break;
        if (num > p.max_blocks) throw new Error('too many blocks');
      }
      const total = parts.reduce((a, x) => a + x.length, 0);
      const body = new Uint8Array(total);
      let off = 0;
      for (const x of parts) { body.set(x, off); off += x.length; }
      let bin = '';
      for (let i = 0; i < body.length; i += 8192) {
        bin += String.fromCharCode.apply(null, body.subarray(i, i + 8192));
      }
      r.body_len = total;
      r.body_b64 = btoa(bin);
      // the in-page check: the words (i * 2654435761) mod 2^32, big-endian
      let bad = -1;
      const dv = new DataView(body.buffer);
      for (let i = 0; i * 4 + 4 <= total; i++) {
        if (dv.getUint32(i * 4) !== Number((BigInt(i) * 2654435761n) % 4294967296n)) {
          bad = i;
          break;
        }
      }
      r.first_bad_word = bad;
      // the block messages are in r.blocks (their heads: the payload is in the body);
      // keep r.msgs and r.sent short
      r.msgs = r.msgs.slice(0, 1);
      r.sent = r.sent.slice(0, 4);
      await closeAndWait(1000);
    } else {
      throw new Error(`unknown scenario ${p.scenario}`);
    }
  } catch (err) {
    r.error = r.error || String(err && err.message || err);
  }
  return r;
}

// ---- the driver ---------------------------------------------------------------------
const PAGE_HTML = '<!doctype html><meta charset="utf-8"><title>moonlet browser test</title>' +
  '<p>CoAP over WebSockets</p>';

async function run() {
  const browser = await puppeteer.launch({
    executablePath: plan.chromium || '/usr/bin/chromium',
    headless: true,
    pipe: true,                    // DevTools over a pipe: no debugging port
    timeout: 15000,
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
      '--no-first-run', '--no-default-browser-check', '--disable-extensions',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-domain-reliability', '--no-pings', '--metrics-recording-only',
      '--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights,' +
        'PrivateNetworkAccessRespectPreflightResults,BlockInsecurePrivateNetworkRequests',
      // names resolve to nothing (the pages' origins are answered by interception,
      // the WebSocket goes to a literal 127.0.0.1): the browser reaches no other host
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    ],
  });
  const out = [];
  try {
    for (const pg of plan.pages) {
      const page = await browser.newPage();
      const origin = new URL(pg.origin).origin;
      const logs = [];
      page.on('console', (m) => logs.push(m.text()));
      page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
      await page.setRequestInterception(true);
      page.on('request', (req) => {
        if (new URL(req.url()).origin === origin) {
          req.respond({ status: 200, contentType: 'text/html; charset=utf-8', body: PAGE_HTML });
        } else {
          req.abort('blockedbyclient');
        }
      });
      await page.goto(`${origin}/`, { waitUntil: 'load', timeout: 10000 });
      const res = await page.evaluate(pageMain, pg);
      res.console = logs;
      out.push(res);
      await page.close();
    }
  } finally {
    await browser.close();
  }
  return out;
}

run().then((pages) => {
  clearTimeout(killer);
  // stdout is a pipe: asynchronous in node; exit once the line is written
  process.stdout.write(JSON.stringify({ pages }) + '\n', () => process.exit(0));
}, (err) => {
  console.error(`browser.js: ${err && err.stack || err}`);
  process.exit(1);
});
