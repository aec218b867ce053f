#!/usr/bin/env python3
"""A lab listener that records what a connecting XMPP peer looks like: its
opening stream header (bytes as sent), its TLS ClientHello (parsed into JA4
and JA3 here, by this file's own code, checked against the JA4 reference
example by `selftest`), and the stream header it sends again inside TLS.

  hellolab.py listen PORT OUT.jsonl CERT KEY [--direct] [--dns PORT DOMAIN]
  hellolab.py selftest

`listen` serves XMPP STARTTLS (or direct TLS with --direct) on 127.0.0.1:PORT,
offers <starttls/>, says <proceed/>, peeks at the ClientHello before the TLS
server reads it, finishes TLS with CERT/KEY, reads the second stream header,
answers it with features and closes. One JSON line per connection goes to
OUT.jsonl. With --dns it also answers DNS on 127.0.0.1:PORT (UDP and TCP):
SRV _xmpp-server._tcp.DOMAIN and _xmpp-client._tcp.DOMAIN point at the
listener's port on DOMAIN, whose A record is 127.0.0.1; anything else is
NXDOMAIN. Everything is bounded: 64 KiB per header, 10 s per connection.
"""

import hashlib
import json
import re
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time

MAX = 64 * 1024
TIMEOUT = 10.0
STREAMS = "http://etherx.jabber.org/streams"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"


def is_grease(v):
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


class Hello:
    """The parts of a ClientHello that JA3 and JA4 read."""

    def __init__(self):
        self.legacy_version = 0
        self.ciphers = []
        self.extensions = []
        self.sni = None
        self.alpn = []
        self.versions = []
        self.sigalgs = []
        self.groups = []
        self.point_formats = []
        self.key_shares = []


def u16s(b):
    return [struct.unpack(">H", b[i : i + 2])[0] for i in range(0, len(b) - 1, 2)]


def parse_hello(record):
    """Parses one TLS record holding a ClientHello (the whole message)."""
    if len(record) < 9 or record[0] != 0x16 or record[5] != 0x01:
        raise ValueError("not a TLS handshake record with a ClientHello")
    body_len = int.from_bytes(record[6:9], "big")
    b = record[9 : 9 + body_len]
    if len(b) != body_len:
        raise ValueError("ClientHello split over records")
    h = Hello()
    h.legacy_version = struct.unpack(">H", b[0:2])[0]
    i = 2 + 32
    sid = b[i]
    i += 1 + sid
    n = struct.unpack(">H", b[i : i + 2])[0]
    h.ciphers = u16s(b[i + 2 : i + 2 + n])
    i += 2 + n
    i += 1 + b[i]  # compression methods
    if i >= len(b):
        return h
    n = struct.unpack(">H", b[i : i + 2])[0]
    ext = b[i + 2 : i + 2 + n]
    j = 0
    while j + 4 <= len(ext):
        t, ln = struct.unpack(">HH", ext[j : j + 4])
        d = ext[j + 4 : j + 4 + ln]
        j += 4 + ln
        h.extensions.append(t)
        if not d:
            continue
        if t == 0x0000:
            k = 2
            if len(d) >= 5 and d[k] == 0:
                ln2 = struct.unpack(">H", d[k + 1 : k + 3])[0]
                h.sni = d[k + 3 : k + 3 + ln2].decode("ascii", "replace")
        elif t == 0x0010:
            k = 2
            while k < len(d):
                ln2 = d[k]
                h.alpn.append(bytes(d[k + 1 : k + 1 + ln2]))
                k += 1 + ln2
        elif t == 0x002B:
            h.versions = u16s(d[1 : 1 + d[0]])
        elif t == 0x000D:
            h.sigalgs = u16s(d[2:])
        elif t == 0x000A:
            h.groups = u16s(d[2:])
        elif t == 0x000B:
            h.point_formats = list(d[1 : 1 + d[0]])
        elif t == 0x0033:
            k = 2
            while k + 4 <= len(d):
                g, ln2 = struct.unpack(">HH", d[k : k + 4])
                h.key_shares.append(g)
                k += 4 + ln2
    return h


VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2"}


def alpn_chars(alpn):
    if not alpn or not alpn[0]:
        return "00"
    v = alpn[0]
    first, last = v[0], v[-1]
    alnum = lambda c: 0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A
    if alnum(first) and alnum(last):
        return chr(first) + chr(last)
    x = v.hex()
    return x[0] + x[-1]


def sha12(s):
    return hashlib.sha256(s.encode()).hexdigest()[:12]


def ja4_parts(h, original=False):
    ciphers = [c for c in h.ciphers if not is_grease(c)]
    exts = [e for e in h.extensions if not is_grease(e)]
    versions = [v for v in h.versions if not is_grease(v)]
    version = VERSIONS.get(max(versions) if versions else h.legacy_version, "00")
    a = "t%s%s%02d%02d%s" % (
        version,
        "d" if 0x0000 in exts else "i",
        min(len(ciphers), 99),
        min(len(exts), 99),
        alpn_chars(h.alpn),
    )
    cs = ciphers if original else sorted(ciphers)
    es = exts if original else sorted(e for e in exts if e not in (0x0000, 0x0010))
    sig = [s for s in h.sigalgs if not is_grease(s)]
    b = ",".join("%04x" % c for c in cs)
    c = ",".join("%04x" % e for e in es)
    if sig:
        c += "_" + ",".join("%04x" % s for s in sig)
    return a, b, c, bool(cs), bool(es)


def ja4(h, original=False):
    a, b, c, has_c, has_e = ja4_parts(h, original)
    return "%s_%s_%s" % (a, sha12(b) if has_c else "0" * 12, sha12(c) if has_e else "0" * 12)


def ja4_raw(h, original=False):
    a, b, c, _, _ = ja4_parts(h, original)
    return "%s_%s_%s" % (a, b, c)


def ja3_text(h):
    f = lambda xs: "-".join(str(x) for x in xs if not is_grease(x))
    return "%d,%s,%s,%s,%s" % (
        h.legacy_version,
        f(h.ciphers),
        f(h.extensions),
        f(h.groups),
        "-".join(str(x) for x in h.point_formats),
    )


def fingerprints(record):
    h = parse_hello(record)
    text = ja3_text(h)
    return {
        "ja4": ja4(h),
        "ja4_r": ja4_raw(h),
        "ja4_o": ja4(h, True),
        "ja4_ro": ja4_raw(h, True),
        "ja3": hashlib.md5(text.encode()).hexdigest(),
        "ja3_text": text,
        "sni": h.sni,
        "alpn": [a.decode("ascii", "replace") for a in h.alpn],
        "key_shares": ["%04x" % g for g in h.key_shares],
        "hello_len": len(record),
    }


# ----------------------------------------------------------------- selftest
def build_hello(ciphers, exts, sigalgs, alpn=b"h2", versions=(0x0304, 0x0303)):
    """A synthetic ClientHello with these values, for the reference example."""
    body = b""
    for t in exts:
        if t == 0x0000:
            name = b"example.org"
            d = struct.pack(">HBH", len(name) + 3, 0, len(name)) + name
        elif t == 0x0010:
            d = struct.pack(">HB", len(alpn) + 1, len(alpn)) + alpn
        elif t == 0x002B:
            d = bytes([2 * len(versions)]) + b"".join(struct.pack(">H", v) for v in versions)
        elif t == 0x000D:
            d = struct.pack(">H", 2 * len(sigalgs)) + b"".join(struct.pack(">H", s) for s in sigalgs)
        else:
            d = b""
        body += struct.pack(">HH", t, len(d)) + d
    cs = b"".join(struct.pack(">H", c) for c in ciphers)
    hello = b"\x03\x03" + bytes(32) + b"\x00" + struct.pack(">H", len(cs)) + cs + b"\x01\x00"
    hello += struct.pack(">H", len(body)) + body
    msg = b"\x01" + len(hello).to_bytes(3, "big") + hello
    return b"\x16\x03\x01" + struct.pack(">H", len(msg)) + msg


def selftest():
    """The JA4 spec's own example (FoxIO technical_details/JA4.md), with
    GREASE values added, which must not change anything."""
    ciphers = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9,
               0xCCA8, 0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
    exts = [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D,
            0x0005, 0x0023, 0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015]
    sig = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]
    h = parse_hello(build_hello([0x1A1A] + ciphers, [0x2A2A] + exts + [0xFAFA], sig))
    checks = [
        (ja4(h), "t13d1516h2_8daaf6152771_e5627efa2ab1"),
        (ja4(h, True), "t13d1516h2_acb858a92679_18f69afefd3d"),
        (ja4_raw(h), "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,"
         "c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,"
         "ff01_0403,0804,0401,0503,0805,0501,0806,0601"),
        (sha12("0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"), "6d807ffa2a79"),
        (alpn_chars([b"http/1.1"]), "h1"),
        (alpn_chars([b"\xab"]), "ab"),
        (alpn_chars([b"\xab\xcd"]), "ad"),
        (alpn_chars([b"\x30\xab"]), "3b"),
        (alpn_chars([b"\x30\x31\xab\xcd"]), "3d"),
        (alpn_chars([b"\x30\xab\xcd\x31"]), "01"),
        (alpn_chars([]), "00"),
    ]
    # JA3's own reference (salesforce/ja3 README): text to md5.
    text = ("769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0")
    checks.append((hashlib.md5(text.encode()).hexdigest(), "ada70206e40642a3e4461f35503241d5"))
    bad = [(got, want) for got, want in checks if got != want]
    for got, want in bad:
        print("selftest: got %s, want %s" % (got, want), file=sys.stderr)
    print("selftest: %d of %d checks passed" % (len(checks) - len(bad), len(checks)))
    return 1 if bad else 0


# ----------------------------------------------------------------- listener
def read_until(sock, pattern, buf=b""):
    """Reads until `pattern` (a compiled bytes regex) matches; returns (match, buf)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        m = pattern.search(buf)
        if m:
            return m, buf
        if len(buf) > MAX or time.monotonic() > deadline:
            raise ValueError("no match within bounds: %r" % buf[:200])
        chunk = sock.recv(4096)
        if not chunk:
            raise ValueError("closed after %r" % buf[:200])
        buf += chunk


HEADER = re.compile(rb"<(?:stream:)?stream[^>]*>")
STARTTLS = re.compile(rb"<starttls[^>]*/>|<starttls[^>]*>\s*</starttls>")


def stream_reply(header):
    ns = b"jabber:server" if b"jabber:server" in header else b"jabber:client"
    return (b"<?xml version='1.0'?><stream:stream xmlns='" + ns + b"' xmlns:stream='"
            + STREAMS.encode() + b"' id='lab1' from='lab' version='1.0'>")


def peek_hello(sock):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        data = sock.recv(MAX + 5, socket.MSG_PEEK)
        if not data:
            raise ValueError("closed before the ClientHello")
        if len(data) >= 5:
            need = 5 + struct.unpack(">H", data[3:5])[0]
            if len(data) >= need:
                return data[:need]
        time.sleep(0.01)
    raise ValueError("no whole ClientHello in time")


class Lab(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def handler(out, ctx, direct):
    lock = threading.Lock()

    class H(socketserver.BaseRequestHandler):
        def handle(self):
            rec = {"direct": direct}
            sock = self.request
            sock.settimeout(TIMEOUT)
            try:
                if not direct:
                    m, buf = read_until(sock, HEADER)
                    rec["header"] = buf[: m.end()].decode("utf-8", "replace")
                    sock.sendall(stream_reply(m.group(0)) + b"<stream:features><starttls xmlns='"
                                 + TLS_NS.encode() + b"'><required/></starttls></stream:features>")
                    m, buf = read_until(sock, STARTTLS, buf[m.end():])
                    rec["starttls"] = m.group(0).decode("utf-8", "replace")
                    sock.sendall(b"<proceed xmlns='" + TLS_NS.encode() + b"'/>")
                hello = peek_hello(sock)
                rec["hello_hex"] = hello.hex()
                rec.update(fingerprints(hello))
                tls = ctx.wrap_socket(sock, server_side=True)
                rec["tls_version"] = tls.version()
                m, buf = read_until(tls, HEADER)
                rec["header_tls"] = buf[: m.end()].decode("utf-8", "replace")
                tls.sendall(stream_reply(m.group(0)) + b"<stream:features/>")
                try:
                    read_until(tls, re.compile(rb"</stream:stream>"), buf[m.end():])
                    rec["closed_stream"] = True
                except (ValueError, OSError, ssl.SSLError):
                    rec["closed_stream"] = False
            except (ValueError, OSError, ssl.SSLError) as e:
                rec["error"] = str(e)
            with lock, open(out, "a") as f:
                f.write(json.dumps(rec) + "\n")

    return H


# ----------------------------------------------------------------- DNS
def dns_name(name):
    return b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"


def dns_server(port, domain, xmpp_port):
    """A tiny authoritative DNS server (no library needed): one question per
    query, answers from a fixed table, NXDOMAIN for names not in it."""
    domain = domain.rstrip(".").lower()
    srv = struct.pack(">HHH", 0, 5, xmpp_port) + dns_name(domain)
    answers = {
        ("_xmpp-server._tcp." + domain, 33): srv,
        ("_xmpp-client._tcp." + domain, 33): srv,
        (domain, 1): socket.inet_aton("127.0.0.1"),
    }

    def answer(wire):
        qid, flags, qd = struct.unpack(">HHH", wire[:6])
        i, labels = 12, []
        while wire[i]:
            labels.append(wire[i + 1 : i + 1 + wire[i]].decode("ascii").lower())
            i += 1 + wire[i]
        qtype = struct.unpack(">H", wire[i + 1 : i + 3])[0]
        question = wire[12 : i + 5]
        name = ".".join(labels)
        rdata = answers.get((name, qtype))
        known = any(n == name for n, _ in answers)
        rcode = 0 if known else 3
        head = struct.pack(">HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1, 1 if rdata else 0, 0, 0)
        out = head + question
        if rdata:
            out += b"\xc0\x0c" + struct.pack(">HHIH", qtype, 1, 60, len(rdata)) + rdata
        return out

    def udp():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", port))
        while True:
            wire, peer = s.recvfrom(4096)
            try:
                s.sendto(answer(wire), peer)
            except Exception as e:  # a malformed query is dropped, not fatal
                print("dns: %s" % e, file=sys.stderr)

    def tcp():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(8)
        while True:
            c, _ = s.accept()
            c.settimeout(TIMEOUT)
            try:
                n = struct.unpack(">H", c.recv(2))[0]
                wire = b""
                while len(wire) < n:
                    chunk = c.recv(n - len(wire))
                    if not chunk:
                        break
                    wire += chunk
                a = answer(wire)
                c.sendall(struct.pack(">H", len(a)) + a)
            except Exception as e:
                print("dns: %s" % e, file=sys.stderr)
            finally:
                c.close()

    threading.Thread(target=udp, daemon=True).start()
    threading.Thread(target=tcp, daemon=True).start()


def main(argv):
    if argv[1:2] == ["selftest"]:
        return selftest()
    if argv[1:2] != ["listen"] or len(argv) < 6:
        print(__doc__, file=sys.stderr)
        return 64
    port, out, cert, key = int(argv[2]), argv[3], argv[4], argv[5]
    rest = argv[6:]
    direct = "--direct" in rest
    if "--dns" in rest:
        i = rest.index("--dns")
        dns_server(int(rest[i + 1]), rest[i + 2], port)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["xmpp-client", "xmpp-server"])
    srv = Lab(("127.0.0.1", port), handler(out, ctx, direct))
    print("listening", flush=True)
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
