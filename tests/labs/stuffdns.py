#!/usr/bin/env python3
"""A hostile DNS forwarder for the test lab: it stuffs answers with RRsets of other owners.

    stuffdns.py --listen 127.77.0.9:53 --upstream 127.77.0.2:53 \\
        [--stuff TLSA:tlsa.good.test. ...] [--servfail-under flip.test. --while-file F]
        [--ready-file F]

Listens on UDP and TCP at --listen and forwards every query, as it came (same
id, RD, CD, EDNS with the DO bit and buffer size), to --upstream over TCP. For
each response to a query of type TYPE (an answer, NODATA, NXDOMAIN or
SERVFAIL alike) and each `--stuff TYPE:OWNER`, it appends to the ANSWER
section the RRset OWNER/TYPE and the RRSIGs over it, fetched from upstream with
DO and CD set. The stuffed RRset is validly signed, only not for the name that
was asked: `--stuff TLSA:tlsa.good.test.` makes the TLSA answer for
_15222._tcp.xmpp.wrong.test. also carry tlsa.good.test.'s signed TLSA. An
RRset already in the answer is not added twice; if the fetch fails, the
response goes out unstuffed.

`--servfail-under NAME` (repeatable) answers every query for NAME or a name
below it with SERVFAIL, without asking upstream, as a resolver does when the
domain's own servers are dead or blocked; the rest of the tree (the root
included) still answers. With `--while-file F` that happens only while the
file F exists, so a test can switch one domain's DNS off and on.

A UDP response larger than the client can take (512 bytes without EDNS, else
its advertised buffer size, at least 512) is sent with TC set and empty
sections, so the client retries over TCP. A truncated upstream response
(cannot happen over TCP, but still) is passed on unchanged.

Loopback only: both addresses must be IPv4 in 127.0.0.0/8. Port 0 in --listen
picks a free port (the same for UDP and TCP). Once both sockets listen, the
actual HOST:PORT is written to --ready-file (atomically: a temporary file,
then rename). SIGTERM or SIGINT closes the sockets and exits 0.

Bounded everywhere: upstream queries time out after --timeout seconds (3), a
TCP client gets the same idle timeout and at most 100 queries per connection,
a message is at most 65535 bytes, and at most 64 queries are in flight (more
are dropped, UDP, or closed, TCP). Errors go to stderr, one line each.

Needs dnspython (Debian: python3-dnspython). If the `python3` found first
lacks it (a pyenv, a venv) the script re-runs itself once with /usr/bin/python3.
"""

import argparse
import ipaddress
import os
import selectors
import signal
import socket
import struct
import sys
import threading

try:
    import dns.flags
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype
    import dns.name
except ImportError:
    if os.environ.get("STUFFDNS_REEXEC") != "1" and os.path.exists("/usr/bin/python3") \
            and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.environ["STUFFDNS_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    sys.exit("stuffdns.py: dnspython is missing (apt-get install python3-dnspython)")

MAX_MSG = 65535
MAX_INFLIGHT = 64
MAX_TCP_QUERIES = 100


def log(msg):
    print(f"stuffdns.py: {msg}", file=sys.stderr, flush=True)


def loopback_addr(text):
    """HOST:PORT with HOST an IPv4 address in 127.0.0.0/8 -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"want HOST:PORT, got {text!r}")
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {host!r}")
    if ip not in ipaddress.IPv4Network("127.0.0.0/8"):
        raise argparse.ArgumentTypeError(f"{host} is not in 127.0.0.0/8 (loopback only)")
    return host, int(port)


def stuff_spec(text):
    """TYPE:OWNER -> (rdtype, absolute name)."""
    rtype, sep, owner = text.partition(":")
    if not sep or not owner:
        raise argparse.ArgumentTypeError(f"want TYPE:OWNER, got {text!r}")
    try:
        rdtype = dns.rdatatype.from_text(rtype)
    except Exception:
        raise argparse.ArgumentTypeError(f"unknown record type {rtype!r}")
    return rdtype, dns.name.from_text(owner)


class Forwarder:
    def __init__(self, upstream, stuffs, timeout, servfail_under=(), while_file=None):
        self.upstream_host, self.upstream_port = upstream
        self.stuffs = stuffs
        self.timeout = timeout
        self.servfail_under = list(servfail_under)
        self.while_file = while_file
        self.inflight = threading.BoundedSemaphore(MAX_INFLIGHT)

    def ask_upstream(self, query):
        return dns.query.tcp(query, self.upstream_host, timeout=self.timeout,
                             port=self.upstream_port)

    def fetch_signed(self, owner, rdtype):
        """The RRset owner/rdtype and its RRSIGs, as upstream answers them with DO+CD."""
        q = dns.message.make_query(owner, rdtype, want_dnssec=True, payload=1232)
        q.flags |= dns.flags.RD | dns.flags.CD
        r = self.ask_upstream(q)
        return [rrset for rrset in r.answer if rrset.name == owner and (
            rrset.rdtype == rdtype
            or (rrset.rdtype == dns.rdatatype.RRSIG and rrset.covers == rdtype))]

    def stuff(self, query, response):
        qtype = query.question[0].rdtype
        for rdtype, owner in self.stuffs:
            if rdtype != qtype:
                continue
            try:
                extra = self.fetch_signed(owner, rdtype)
            except Exception as e:
                log(f"fetching {owner} {dns.rdatatype.to_text(rdtype)}: {e!r}")
                continue
            if not extra:
                log(f"upstream has no {owner} {dns.rdatatype.to_text(rdtype)} to stuff")
            for rrset in extra:
                if not any(have.name == rrset.name and have.rdtype == rrset.rdtype
                           and have.covers == rrset.covers for have in response.answer):
                    response.answer.append(rrset)

    def failing(self, qname):
        """Whether this name's DNS is switched off (SERVFAIL without asking upstream)."""
        if self.while_file is not None and not os.path.exists(self.while_file):
            return False
        return any(qname.is_subdomain(top) for top in self.servfail_under)

    def answer(self, wire, limit):
        """Reply wire bytes for query wire bytes, or None to stay silent.

        limit: the largest reply the client takes (UDP), or None (TCP)."""
        try:
            query = dns.message.from_wire(wire)
        except Exception as e:
            log(f"unparsable query dropped: {e!r}")
            return None
        if query.flags & dns.flags.QR or len(query.question) != 1:
            return None
        if self.failing(query.question[0].name):
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        try:
            response = self.ask_upstream(query)
        except Exception as e:
            log(f"upstream failed for {query.question[0]}: {e!r}")
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        if not response.flags & dns.flags.TC:
            self.stuff(query, response)
        out = response.to_wire(max_size=MAX_MSG)
        if limit is not None and len(out) > limit:
            response.answer, response.authority, response.additional = [], [], []
            response.flags |= dns.flags.TC
            out = response.to_wire()
        return out


def udp_limit(wire):
    """The reply size a UDP client takes: 512 without EDNS, else its buffer (>= 512)."""
    try:
        q = dns.message.from_wire(wire)
    except Exception:
        return 512
    return max(512, min(q.payload, MAX_MSG)) if q.edns >= 0 else 512


def serve_udp(fwd, sock, wire, client):
    try:
        out = fwd.answer(wire, udp_limit(wire))
        if out is not None:
            sock.sendto(out, client)
    except Exception as e:
        log(f"UDP {client}: {e!r}")
    finally:
        fwd.inflight.release()


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def serve_tcp(fwd, conn, client):
    try:
        conn.settimeout(fwd.timeout)
        for _ in range(MAX_TCP_QUERIES):
            head = recv_exact(conn, 2)
            if head is None:
                break
            (n,) = struct.unpack("!H", head)
            wire = recv_exact(conn, n)
            if wire is None:
                break
            out = fwd.answer(wire, None)
            if out is None:
                break
            conn.sendall(struct.pack("!H", len(out)) + out)
    except (socket.timeout, ConnectionError):
        pass
    except Exception as e:
        log(f"TCP {client}: {e!r}")
    finally:
        conn.close()
        fwd.inflight.release()


def bind_both(host, port):
    """UDP and TCP sockets on the same host:port (port 0: a free one)."""
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((host, port))
        actual = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((host, actual))
        except OSError:
            udp.close()
            tcp.close()
            if port:
                raise
            continue
        tcp.listen(16)
        return udp, tcp, actual
    raise OSError(f"no port free for both UDP and TCP on {host}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, type=loopback_addr, metavar="HOST:PORT")
    ap.add_argument("--upstream", required=True, type=loopback_addr, metavar="HOST:PORT")
    ap.add_argument("--stuff", action="append", default=[], type=stuff_spec,
                    metavar="TYPE:OWNER", help="may be repeated")
    ap.add_argument("--servfail-under", action="append", default=[], type=dns.name.from_text,
                    metavar="NAME", help="answer SERVFAIL for NAME and below; may be repeated")
    ap.add_argument("--while-file", metavar="F",
                    help="--servfail-under applies only while this file exists")
    ap.add_argument("--ready-file", metavar="F")
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = ap.parse_args()
    if not 0 < args.timeout <= 60:
        ap.error("--timeout must be in (0, 60]")

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    fwd = Forwarder(args.upstream, args.stuff, args.timeout, args.servfail_under,
                    args.while_file)
    host, port = args.listen
    udp, tcp, port = bind_both(host, port)
    udp.setblocking(False)
    tcp.setblocking(False)
    if args.ready_file:
        tmp = f"{args.ready_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{host}:{port}\n")
        os.replace(tmp, args.ready_file)

    sel = selectors.DefaultSelector()
    sel.register(udp, selectors.EVENT_READ)
    sel.register(tcp, selectors.EVENT_READ)
    while not stop.is_set():
        for key, _ in sel.select(timeout=0.2):
            try:
                if key.fileobj is udp:
                    wire, client = udp.recvfrom(MAX_MSG)
                    if not fwd.inflight.acquire(blocking=False):
                        continue  # too busy: drop, the client retries
                    threading.Thread(target=serve_udp, args=(fwd, udp, wire, client),
                                     daemon=True).start()
                else:
                    conn, client = tcp.accept()
                    conn.setblocking(True)
                    if not fwd.inflight.acquire(blocking=False):
                        conn.close()
                        continue
                    threading.Thread(target=serve_tcp, args=(fwd, conn, client),
                                     daemon=True).start()
            except (BlockingIOError, InterruptedError):
                pass
    sel.close()
    udp.close()
    tcp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
