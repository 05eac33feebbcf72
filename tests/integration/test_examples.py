#!/usr/bin/env python3
"""test_examples.py -- the shipped examples, driven by coap-client-notls: sensors.lua (the
discovery example of the CoAP chapter, exact link attributes, filters, reads, writes and
validation), firmware.lua (a 256 KiB image block-wise, an atomic log upload), hello.lua
(answers like the C plugin) and plugtest.lua (its core resources). Run like test_core.py.
"""

import hashlib
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    Server, check, coap_client, eq, error_code_of, link_parse, main, test)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def example(name):
    return os.path.join(ROOT, "examples", name)


def get(s, path, *args):
    rc, out, err = coap_client("-m", "get", *args, "coap://[::1]:%d%s" % (s.port, path))
    check(rc == 0, "coap-client exit %r for %s: %r" % (rc, path, err))
    return out.rstrip("\n"), err.strip()


def links(s, query=""):
    out, err = get(s, "/.well-known/core" + query)
    return dict(link_parse(out))


SENSORS = {
    "/sensors/temp": {"rt": ["temperature"], "if": ["sensor"], "obs": [None]},
    "/sensors/humidity": {"rt": ["humidity"], "if": ["sensor"], "obs": [None]},
    "/sensors/pressure": {"rt": ["pressure"], "if": ["sensor"]},
    "/actuators/led": {"rt": ["light"], "if": ["actuator"]},
    "/config/interval": {"rt": ["config"], "if": ["parameter"]},
    "/sensors/temp_outdoor": {"rt": ["temperature"]},
}


@test("sensors.lua: /.well-known/core lists exactly the chapter's resources and attributes")
def t_sensors_discovery():
    with Server(plugins=[example("sensors.lua")]) as s:
        got = links(s)
        eq(sorted(got), sorted(SENSORS), "resources")
        for href, want in SENSORS.items():
            attrs = {k: v for k, v in got[href].items() if k in ("rt", "if", "obs")}
            eq(attrs, want, href + " rt/if/obs")


@test("sensors.lua: ?rt=temperature -> temp and temp_outdoor only; ?obs -> the observable "
      "ones; ?if=sensor -> the four sensors")
def t_sensors_filters():
    with Server(plugins=[example("sensors.lua")]) as s:
        eq(sorted(links(s, "?rt=temperature")), ["/sensors/temp", "/sensors/temp_outdoor"],
           "?rt=temperature")
        eq(sorted(links(s, "?obs")), ["/sensors/humidity", "/sensors/temp"], "?obs")
        eq(sorted(links(s, "?if=sensor")), ["/sensors/humidity", "/sensors/pressure",
                                            "/sensors/temp"], "?if=sensor")


@test("sensors.lua: a reading as text and as JSON (Accept 50); Accept 41 -> 4.06")
def t_sensors_read():
    import json
    with Server(plugins=[example("sensors.lua")]) as s:
        out, _ = get(s, "/sensors/temp")
        check(15 < float(out) < 30, "temperature %r" % out)
        out, _ = get(s, "/sensors/humidity", "-A", "50")
        v = json.loads(out)
        eq(v["unit"], "%RH", "unit")
        check(30 < v["value"] < 60, "humidity %r" % v)
        out, err = get(s, "/sensors/temp", "-A", "41")
        check(err.startswith("4.06"), "Accept 41: %r" % err)


@test("sensors.lua: PUT /actuators/led on/off, bad value -> 4.00 with a reason; "
      "/config/interval validated")
def t_sensors_write():
    with Server(plugins=[example("sensors.lua")]) as s:
        url = "coap://[::1]:%d" % s.port
        rc, out, err = coap_client("-m", "put", "-e", "on", url + "/actuators/led")
        eq(err.strip(), "", "PUT on")
        eq(get(s, "/actuators/led")[0], "on", "led")
        rc, out, err = coap_client("-m", "put", "-e", "blink", url + "/actuators/led")
        check(err.startswith("4.00") and "on" in err, "bad led value: %r" % err)
        eq(get(s, "/actuators/led")[0], "on", "led unchanged")
        for bad in ("abc", "5.5", "0", "3601"):
            rc, out, err = coap_client("-m", "put", "-e", bad, url + "/config/interval")
            check(err.startswith("4.00 interval must be"), "interval %r: %r" % (bad, err))
        rc, out, err = coap_client("-m", "put", "-e", "2", url + "/config/interval")
        eq(err.strip(), "", "interval 2")
        eq(get(s, "/config/interval")[0], "2", "interval")


def observe_values(text):
    """(Observe, payload) of each 2.05 the server sent, from coap-client's -v 7 log."""
    import re
    return [(int(v), p) for v, p in re.findall(
        r"t:(?:ACK|NON|CON) c:2\.05 i:\w+ \{\w*\} \[[^\]]*?Observe:(\d+)[^\]]*\] :: '([^']*)'",
        text)]


def increasing(vals):
    """RFC 7641 §3.4 order (24-bit serial arithmetic), each value newer than the last."""
    return all((a < b and b - a < 1 << 23) or (a > b and a - b > 1 << 23)
               for a, b in zip(vals, vals[1:]))


@test("sensors.lua: coap-client-notls -s observes /sensors/humidity (interval set to 1 s): "
      "successive notifications with increasing Observe values and changing readings")
def t_sensors_observe():
    with Server(plugins=[example("sensors.lua")]) as s:
        url = "coap://[::1]:%d" % s.port
        rc, out, err = coap_client("-m", "put", "-e", "1", url + "/config/interval")
        eq(err.strip(), "", "interval 1")
        rc, out, err = coap_client("-v", "7", "-s", "6", "-B", "7",
                                   url + "/sensors/humidity", timeout=20)
        got = observe_values(out + err)
        # a reading is notified when it changes at 0.1 resolution; humidity's noise (+-0.4)
        # makes that about 7 seconds in 8: at least 2 of 5 ticks fail 1 run in 1000
        check(len(got) >= 3, "only %d representations in 6 s: %r" % (len(got), got))
        check(increasing([v for v, _ in got]), "Observe values %r" % [v for v, _ in got])
        check(all(30 < float(p) < 60 for _, p in got), "readings %r" % got)
        check(len({p for _, p in got}) > 1, "the reading never changed: %r" % got)


@test("plugtest.lua: a PUT to /obs notifies its observer at once, as a CON with the new "
      "value; /obs-non's 5-second tick arrives as a NON")
def t_plugtest_observe():
    with Server(plugins=[example("plugtest.lua")]) as s:
        url = "coap://[::1]:%d" % s.port
        import subprocess
        p = subprocess.Popen(["coap-client-notls", "-v", "7", "-s", "2", "-B", "3",
                              url + "/obs"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        seen = []
        for line in iter(p.stdout.readline, b""):   # the client ends within -B 3 s
            seen.append(line.decode("utf-8", "replace"))
            if "t:ACK c:2.05" in seen[-1]:          # registered: now change it
                break
        rc, out, err = coap_client("-m", "put", "-e", "hello", url + "/obs")
        text, _ = p.communicate(timeout=15)
        text = "".join(seen) + text.decode("utf-8", "replace")
        got = observe_values(text)
        check(len(got) >= 2 and increasing([v for v, _ in got]), "Observe values %r" % got)
        import re
        check(re.search(r"t:CON c:2\.05 i:\w+ \{\w*\} \[[^\]]*Observe:\d+[^\]]*\] :: "
                        r"'hello'", text),
              "no CON notification with the PUT's value:\n%s" % text[-1500:])
        rc, out, err = coap_client("-v", "7", "-s", "6", "-B", "7", url + "/obs-non",
                                   timeout=20)
        check(re.search(r"t:NON c:2\.05 i:\w+ \{\w*\} \[[^\]]*Observe:\d+", out + err),
              "no NON notification from /obs-non in 6 s:\n%s" % (out + err)[-1500:])


@test("firmware.lua: 256 KiB image at block sizes 1024, 256 and 16 with a stable ETag; "
      "a 64 KiB log upload stored atomically in the data directory")
def t_firmware():
    with tempfile.TemporaryDirectory() as d:
        image = os.urandom(256 * 1024)
        with open(os.path.join(d, "update.bin"), "wb") as f:
            f.write(image)
        with Server(plugins=[example("firmware.lua")],
                    sets=["firmware.dir=" + d, "lua.paths=" + d]) as s:
            url = "coap://[::1]:%d" % s.port
            for b in (1024, 256, 16):
                out = os.path.join(d, "out%d" % b)
                rc, _, err = coap_client("-b", b, "-m", "get", url + "/firmware/update.bin",
                                         "-o", out, timeout=120)
                with open(out, "rb") as f:
                    eq(hashlib.sha256(f.read()).hexdigest(), hashlib.sha256(image).hexdigest(),
                       "SHA-256 at block size %d (%r)" % (b, err))
            log = os.urandom(64 * 1024)
            with open(os.path.join(d, "my.log"), "wb") as f:
                f.write(log)
            rc, _, err = coap_client("-b", 512, "-m", "put", "-f", os.path.join(d, "my.log"),
                                     url + "/logs/daily", timeout=60)
            eq(err.strip(), "", "upload")
            with open(os.path.join(d, "daily.log"), "rb") as f:
                eq(f.read() == log, True, "stored log equals the upload")
            check(not os.path.exists(os.path.join(d, "daily.log.tmp")), "no temporary left")


@test("hello.lua answers like the hello plugin: /hello, /echo, discovery attributes")
def t_hello_twin():
    lua_links = None
    for unit in ([example("hello.lua")], [p for p in __import__("coaptest").cfg.plugins
                                          if p.endswith("hello.so")]):
        with Server(plugins=unit) as s:
            eq(get(s, "/hello")[0], "Hello, world", "/hello")
            rc, out, err = coap_client("-m", "post", "-e", "hi", "-t", "0",
                                       "coap://[::1]:%d/echo" % s.port)
            eq(out.rstrip("\n"), "hi", "/echo")
            got = links(s)
            if lua_links is None:
                lua_links = got
            else:
                eq(lua_links, got, "discovery of hello.lua vs hello.so")


@test("plugtest.lua: /test, /seg1/seg2/seg3, /query, /multi-format, /large (block-wise), "
      "/link1..3 filters")
def t_plugtest():
    with Server(plugins=[example("plugtest.lua")]) as s:
        check(get(s, "/test")[0], "/test payload")
        check(get(s, "/seg1/seg2/seg3")[0] != "", "/seg1/seg2/seg3")
        check("first=1" in get(s, "/query?first=1")[0], "/query echoes the query")
        out, _ = get(s, "/multi-format", "-A", "41")
        check(out.startswith("<"), "/multi-format as XML: %r" % out[:40])
        with tempfile.TemporaryDirectory() as d:
            f = os.path.join(d, "large")
            coap_client("-m", "get", "coap://[::1]:%d/large" % s.port, "-o", f)
            eq(os.path.getsize(f), 1280, "/large size (two blocks)")
        eq(sorted(links(s, "?rt=Type1")), ["/link1", "/link3"], "?rt=Type1")


@test("plugtest.lua TD_COAP_BLOCK_04: a block-wise POST to /large-create creates "
      "/large-create/1 (2.01, Location-Path large-create/1); a GET returns what was "
      "uploaded; discovery lists it; DELETE removes it")
def t_plugtest_large_create():
    body = bytes((i * 7) % 251 for i in range(3000))
    with Server(plugins=[example("plugtest.lua")]) as s, \
            tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in"), os.path.join(d, "out")
        with open(src, "wb") as f:
            f.write(body)
        url = "coap://[::1]:%d" % s.port
        rc, out, err = coap_client("-m", "post", "-b", "1024", "-f", src, "-v", "6",
                                   url + "/large-create")
        check("2.01" in err + out and "Location-Path:large-create, Location-Path:1" in
              err + out, "POST: %r" % (err + out)[-400:])
        coap_client("-m", "get", "-o", dst, url + "/large-create/1")
        with open(dst, "rb") as f:
            eq(f.read(), body, "GET /large-create/1")
        check("/large-create/1" in links(s), "discovery lists /large-create/1")
        coap_client("-m", "delete", url + "/large-create/1")
        rc, out, err = coap_client(url + "/large-create/1")
        eq(error_code_of(err), "4.04", "GET after DELETE")


@test("plugtest.lua TD_COAP_CORE_23: PUT /create1 with If-None-Match creates it (2.01); the "
      "same again is 4.12 Precondition Failed; after DELETE it can be created again")
def t_plugtest_create1():
    with Server(plugins=[example("plugtest.lua")]) as s:
        url = "coap://[::1]:%d/create1" % s.port
        rc, out, err = coap_client(url)
        eq(error_code_of(err), "4.04", "GET before")
        rc, out, err = coap_client("-m", "put", "-O", "5", "-e", "one", "-v", "6", url)
        check("2.01" in err + out, "first PUT with If-None-Match: %r" % (err + out)[-300:])
        rc, out, err = coap_client("-m", "put", "-O", "5", "-e", "two", url)
        eq(error_code_of(err), "4.12", "second PUT with If-None-Match")
        eq(get(s, "/create1")[0], "one", "GET after")
        coap_client("-m", "delete", url)
        rc, out, err = coap_client("-m", "put", "-O", "5", "-e", "three", "-v", "6", url)
        check("2.01" in err + out, "PUT after DELETE: %r" % (err + out)[-300:])


def rd_post(s, query, body, ct="40"):
    rc, out, err = coap_client("-m", "post", "-t", ct, "-e", body, "-v", "6",
                               "coap://[::1]:%d/rd?%s" % (s.port, query))
    m = re.search(r"c:(\d\.\d\d).*?\[ (.*?) \]", err + out)
    return (m.group(1), m.group(2)) if m else (error_code_of(err), "")


@test("rd.lua (RFC 9176): an endpoint registers its links (2.01, Location-Path rd/N); "
      "resource lookup by rt (exact and prefix) gives absolute links with their anchor; "
      "endpoint lookup lists the registration; the same ep again replaces it; a refresh "
      "is 2.04; DELETE ends it; a registration with lt=1 expires; bad requests get 4.00/4.15; "
      "-s rd.max=2 refuses a third with 5.03")
def t_rd():
    with Server(plugins=[example("rd.lua")], sets=["rd.max=2"]) as s:
        url = "coap://[::1]:%d" % s.port
        code1, opts = rd_post(s, "ep=node1", '</temp>;rt="temperature";obs,</lux>;rt="light"')
        eq((code1, opts), ("2.01", "Location-Path:rd, Location-Path:1"), "registration")
        code2, _ = rd_post(s, "ep=node2&lt=1", '</t2>;rt="temperature"')
        eq(code2, "2.01", "a second registration (lt=1)")
        out = get(s, "/rd-lookup/res?rt=temperature")[0]
        hrefs = [h for h, _ in link_parse(out)]
        eq(len(hrefs), 2, "two temperature links: %r" % out)
        check(all(h.startswith("coap://[::1]:") for h in hrefs), "absolute links: %r" % out)
        first = dict(link_parse(out))[hrefs[0]]
        check(hrefs[0].endswith("/temp") and first["anchor"][0] == hrefs[0][:-5] and
              first.get("obs") == [None], "the anchor is the registration's base: %r" % out)
        eq([h.rsplit("/", 1)[1] for h, _ in link_parse(get(s, "/rd-lookup/res?rt=li*")[0])],
           ["lux"], "rt=li*")
        eq(rd_post(s, "ep=node3", "</x>")[0], "5.03", "a third with rd.max=2")
        m = s.log.wait_for(r"registration of node2 expired", 5.0)
        check(m is not None, "lt=1: no expiry within 5 s")
        eq([h for h, _ in link_parse(get(s, "/rd-lookup/ep")[0])], ["/rd/1"], "after expiry")
        eq(rd_post(s, "ep=node1", "</only>")[0], "2.01", "node1 again: replaced")
        eq([(h, a["ep"]) for h, a in link_parse(get(s, "/rd-lookup/ep")[0])],
           [("/rd/3", ["node1"])], "the replacement")
        eq(get(s, "/rd/3")[0], "</only>", "GET /rd/3: its links")
        rc, out, err = coap_client("-m", "post", "-v", "6", url + "/rd/3?lt=100")
        check("2.04" in out + err, "refresh: %r" % (out + err)[-200:])
        eq(link_parse(get(s, "/rd-lookup/ep")[0])[0][1]["lt"], ["100"], "lt after refresh")
        coap_client("-m", "delete", url + "/rd/3")
        eq(get(s, "/rd-lookup/ep")[0], "", "after DELETE")
        eq(rd_post(s, "ep=bad", "<x")[0], "4.00", "malformed link-format")
        eq(rd_post(s, "ep=bad", "x", ct="0")[0], "4.15", "not link-format")
        eq(rd_post(s, "lt=5", "</x>")[0], "4.00", "no ep")
        links = sorted(h for h, _ in link_parse(get(s, "/.well-known/core?rt=core.rd*")[0]))
        eq(links, ["/rd", "/rd-lookup/ep", "/rd-lookup/res"], "discovery of the RD")


if __name__ == "__main__":
    sys.exit(main())
