"""tlskeys.py -- keys and certificates for the DTLS and TLS tests (test_dtls.py,
test_tls.py), made once per run with certtool (gnutls-bin) in a temporary directory removed
at exit. certs() returns p(name), the path of a file there:

  ca.pem/.key, oca.pem/.key   two CAs ("oca": another one, which the server does not trust)
  srv.pem/.key                the server's, by ca (localhost, ::1, 127.0.0.1)
  cli.pem/.key                a client's by ca: CN sensor-7, O moonlet, dns sensor-7.example
  other, expired, future      a client's by oca; one expired; one not valid yet
  revoked.pem/.key, crl.pem   a client's by ca, and ca's CRL revoking it
  rpksrv, rpkcli, rpkbad      raw public keys (.key and .pub: SubjectPublicKeyInfo PEM)
  notpem.pem                  a file that is not PEM
"""

import atexit
import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

_certs = None


def certs():
    global _certs
    if _certs:
        return _certs
    d = tempfile.mkdtemp(prefix="moonlet-keys-")
    atexit.register(shutil.rmtree, d, True)

    def p(name):
        return os.path.join(d, name)

    def tool(*args):
        subprocess.run(["certtool"] + list(args), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def key(name):
        tool("--generate-privkey", "--key-type=ecdsa", "--curve=secp256r1",
             "--outfile", p(name + ".key"))

    def tmpl(name, lines):
        with open(p(name + ".tmpl"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def signed(name, ca, lines):
        key(name)
        tmpl(name, lines)
        tool("--generate-certificate", "--load-privkey", p(name + ".key"),
             "--load-ca-certificate", p(ca + ".pem"), "--load-ca-privkey", p(ca + ".key"),
             "--template", p(name + ".tmpl"), "--outfile", p(name + ".pem"))

    for ca in ("ca", "oca"):
        key(ca)
        tmpl(ca, ['cn = "%s test CA"' % ca, "ca", "cert_signing_key", "crl_signing_key",
                  "expiration_days = 30"])
        tool("--generate-self-signed", "--load-privkey", p(ca + ".key"), "--template",
             p(ca + ".tmpl"), "--outfile", p(ca + ".pem"))
    signed("srv", "ca", ['cn = "localhost"', 'dns_name = "localhost"', 'ip_address = "::1"',
                         'ip_address = "127.0.0.1"', "tls_www_server", "signing_key",
                         "expiration_days = 30"])
    client = ["tls_www_client", "signing_key"]
    days = ["expiration_days = 30"]
    signed("cli", "ca", ['cn = "sensor-7"', 'organization = "moonlet"',
                         'dns_name = "sensor-7.example"'] + client + days)
    signed("other", "oca", ['cn = "intruder"'] + client + days)
    signed("expired", "ca", ['cn = "old"'] + client + [
        'activation_date = "2020-01-01 00:00:00"', 'expiration_date = "2020-02-01 00:00:00"'])
    signed("future", "ca", ['cn = "early"'] + client + [
        'activation_date = "2090-01-01 00:00:00"', 'expiration_date = "2091-01-01 00:00:00"'])
    signed("revoked", "ca", ['cn = "revoked"', 'serial = 4242'] + client + days)
    tmpl("crl", ["crl_next_update = 30", "crl_number = 1"])
    tool("--generate-crl", "--load-ca-privkey", p("ca.key"), "--load-ca-certificate",
         p("ca.pem"), "--load-certificate", p("revoked.pem"), "--template", p("crl.tmpl"),
         "--outfile", p("crl.pem"))
    for k in ("rpksrv", "rpkcli", "rpkbad"):
        key(k)
        tool("--load-privkey", p(k + ".key"), "--pubkey-info", "--outfile", p(k + ".pub"))
    with open(p("notpem.pem"), "w") as f:
        f.write("this is not a certificate\n")
    _certs = p
    return p


def spki_sha256(pub):
    """sha256:HEX of the SubjectPublicKeyInfo in a PEM public key file."""
    text = open(pub).read()
    b64 = re.search(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", text, re.S)
    return "sha256:" + hashlib.sha256(base64.b64decode(b64.group(1))).hexdigest()
