#!/usr/bin/env python3
"""Many sessions (full JIDs) of one account, with slixmpp, in one process.

    resources.py --jid carol@localhost --password carol-pw --port 15222 --count 55

Logs in USER/r0 .. USER/r{count-1}, prints {"event":"ready","count":N} once
all are online, then answers JSON command lines on stdin (each reply carries
the command's "id"), like xmppclient.py:

    {"cmd":"subscribe_each","to":COMPONENT,"node":NODE}
        subscribes every full JID, one after the other; the reply lists each
        one's {"jid","ok"} and, when refused, "error" (the defined condition,
        read from the XML), "error_type" and "pubsub_error".
    {"cmd":"quit"}

Every PubSub event notification is printed as
{"event":"pubsub","to":FULL_JID,"node":NODE,"items":[ID,...]}, one line per
stanza received. Loopback only, plaintext logins (the lab allows them).
"""

import argparse
import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import slixmpp  # noqa: E402
from slixmpp.exceptions import IqError, IqTimeout  # noqa: E402
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

from xmppclient import NS_EVENT, iq_error, out  # noqa: E402

TIMEOUT = 20


class Session(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.register_plugin("xep_0060")
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        self.online = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda _: out({"event": "auth_failed", "jid": jid}))
        self.remove_handler("Pubsub Event: Items")
        self.register_handler(Callback(
            "resources pubsub event",
            MatchXPath("{jabber:client}message/{%s}event" % NS_EVENT),
            self.on_event))

    async def on_start(self, _):
        self.send_presence()
        if not self.online.done():
            self.online.set_result(True)

    def on_event(self, msg):
        event = msg.xml.find("{%s}event" % NS_EVENT)
        if event is None:
            return
        for items in event.findall("{%s}items" % NS_EVENT):
            out({"event": "pubsub", "to": str(msg["to"]), "node": items.get("node"),
                 "items": [i.get("id") for i in items.findall("{%s}item" % NS_EVENT)]})


async def subscribe_each(sessions, to, node):
    results = []
    for s in sessions:
        r = {"jid": s.boundjid.full}
        try:
            await s.plugin["xep_0060"].subscribe(to, node, bare=False, timeout=TIMEOUT)
            r["ok"] = True
        except IqError as e:
            r.update(iq_error(e.iq))
        except IqTimeout:
            r.update({"ok": False, "error": "timeout"})
        results.append(r)
    return {"ok": True, "results": results}


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    a = p.parse_args()
    sessions = []
    for i in range(a.count):
        s = Session(f"{a.jid}/r{i}", a.password)
        s.connect(host=a.host, port=a.port)
        sessions.append(s)
    await asyncio.wait_for(asyncio.gather(*(s.online for s in sessions)), 60)
    out({"event": "ready", "count": len(sessions)})
    loop = asyncio.get_event_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            cmd = json.loads(line)
        except ValueError:
            continue
        reply = {"id": cmd.get("id")}
        if cmd.get("cmd") == "subscribe_each":
            reply.update(await subscribe_each(sessions, cmd["to"], cmd["node"]))
        elif cmd.get("cmd") == "quit":
            reply["ok"] = True
            out(reply)
            break
        else:
            reply.update({"ok": False, "error": f"unknown command {cmd.get('cmd')}"})
        out(reply)
    for s in sessions:
        s.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
