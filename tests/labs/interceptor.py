#!/usr/bin/env python3
"""A hostile middlebox for the agents test: it listens where the XMPP server
under test is probed and, per source address of each incoming connection,
either forwards the bytes to the real server, or intercepts (answers the
XMPP stream and STARTTLS itself and terminates TLS with its own self-signed
key, which no TLSA record matches), or holds the connection open in silence.

    interceptor.py --listen 127.0.0.1:PORT --forward 127.0.0.1:PORT
                   --cert PEM --key PEM --rules FILE

FILE is JSON, read again for every connection so a test can change it while
this runs: {"127.0.0.3": "intercept", "*": "forward"} (modes: forward,
intercept, hold; "*" for every other address; a missing or unreadable file
means forward). One JSON line per connection on stdout:
{"event": "conn", "from": "127.0.0.3", "mode": "intercept"}; "ready" first.
"""

import argparse
import asyncio
import json
import re
import ssl
import sys

MAX_HEAD = 4096
STREAM_FEATURES = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' id='mitm1' from='{to}' "
    "version='1.0'><stream:features>"
    "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
    "</stream:features>"
)
PROCEED = "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"


def out(event):
    print(json.dumps(event), flush=True)


def mode_for(rules_path, source):
    try:
        with open(rules_path) as f:
            rules = json.load(f)
    except (OSError, ValueError):
        return "forward"
    return rules.get(source, rules.get("*", "forward"))


async def read_until(reader, needle, limit=MAX_HEAD):
    """Reads until `needle` (a regex over bytes) is seen; None past `limit`."""
    buf = b""
    while not re.search(needle, buf):
        chunk = await asyncio.wait_for(reader.read(1024), 10)
        if not chunk or len(buf) > limit:
            return None
        buf += chunk
    return buf


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def forward(reader, writer, target):
    host, port = target
    try:
        up_r, up_w = await asyncio.open_connection(host, port)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))


async def intercept(reader, writer, tls):
    head = await read_until(reader, rb"<stream:stream[^>]*>")
    if head is None:
        writer.close()
        return
    to = re.search(rb"to=['\"]([^'\"]+)['\"]", head)
    writer.write(STREAM_FEATURES.format(to=to.group(1).decode() if to else "x").encode())
    await writer.drain()
    if await read_until(reader, rb"<starttls[^>]*/>") is None:
        writer.close()
        return
    writer.write(PROCEED.encode())
    await writer.drain()
    try:
        await writer.start_tls(tls)
        # The probe has what it came for; wait for it to go.
        await asyncio.wait_for(reader.read(1024), 10)
    except (OSError, ssl.SSLError, asyncio.TimeoutError):
        pass
    writer.close()


async def hold(reader, writer):
    try:
        while await reader.read(1024):
            pass
    except OSError:
        pass
    writer.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--forward", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--rules", required=True)
    a = p.parse_args()
    lhost, lport = a.listen.rsplit(":", 1)
    fhost, fport = a.forward.rsplit(":", 1)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(a.cert, a.key)

    async def handle(reader, writer):
        source = writer.get_extra_info("peername")[0]
        mode = mode_for(a.rules, source)
        out({"event": "conn", "from": source, "mode": mode})
        try:
            if mode == "intercept":
                await intercept(reader, writer, tls)
            elif mode == "hold":
                await hold(reader, writer)
            else:
                await forward(reader, writer, (fhost, int(fport)))
        except (OSError, asyncio.TimeoutError):
            writer.close()

    async def serve():
        server = await asyncio.start_server(handle, lhost, int(lport))
        out({"event": "ready"})
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
