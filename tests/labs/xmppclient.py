#!/usr/bin/env python3
"""A real third-party XMPP client (slixmpp) that a Rust test drives over JSON lines.

    xmppclient.py --jid alice@localhost --password alice-pw --host 127.0.0.1 --port 15222

Prints {"event":"ready"} once logged in, then answers each command line read
on stdin with one JSON line carrying the command's "id". Incoming chat/normal
messages, PubSub event notifications and presence subscription answers are
printed as events as they arrive. Loopback only: the address is given, no SRV
lookups, no TLS (the lab servers allow plaintext logins).
"""

import argparse
import asyncio
import json
import os
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

TIMEOUT = 10


NS_EVENT = "http://jabber.org/protocol/pubsub#event"


DEBUG = bool(os.environ.get("XMPPCLIENT_DEBUG"))


def out(obj):
    if DEBUG:
        print(f"xmppclient -> {obj}", file=sys.stderr, flush=True)
    try:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # The test stopped listening: nothing left to report to.
        sys.exit(0)


NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

# slixmpp 1.17 knows only RFC 3920's stanza error conditions: an IQ error
# with RFC 6120's policy-violation (XEP-0060 §6.1.3.9, too many
# subscriptions) makes its error handler raise, and the request then times
# out. This client reads RFC 6120 errors, as the docs promise they are sent.
slixmpp.stanza.Error.conditions = slixmpp.stanza.Error.conditions | {"policy-violation"}


def iq_error(iq):
    """An IQ error as a reply: its defined condition read from the XML (slixmpp
    reports conditions unknown to RFC 3920, like policy-violation, as ''),
    its type, and any XEP-0060 condition."""
    err = iq.xml.find("{jabber:client}error")
    cond = ""
    if err is not None:
        for child in err:
            name = child.tag.split("}", 1)[-1]
            if child.tag.startswith("{%s}" % NS_STANZAS) and name != "text":
                cond = name
                break
    return {"ok": False, "error": cond, "error_type": iq["error"]["type"],
            "pubsub_error": iq["error"]["pubsub"]["condition"]}


class Driver(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0060")
        self.register_plugin("xep_0199")
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        # Read PubSub notifications from the raw stanza, once per stanza
        # received, instead of slixmpp's own items handler.
        self.remove_handler("Pubsub Event: Items")
        self.register_handler(Callback(
            "certwatch pubsub event",
            MatchXPath("{jabber:client}message/{%s}event" % NS_EVENT),
            self.on_event))
        self.add_event_handler("presence_subscribed", self.on_presence)
        self.add_event_handler("presence_subscribe", self.on_presence)
        self.add_event_handler("presence_available", self.on_presence)
        self.add_event_handler("presence_unavailable", self.on_presence)
        self.add_event_handler("failed_auth", lambda _: out({"event": "auth_failed"}))
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("stream_error", self.on_stream_error)
        self.quitting = False

    async def on_start(self, _):
        self.send_presence()
        try:
            await self.get_roster(timeout=TIMEOUT)
        except (IqError, IqTimeout):
            pass
        out({"event": "ready"})
        # asyncio keeps only weak references to tasks, and the stream
        # protocol holds its reader weakly: without this reference a garbage
        # collection destroys the pending task and stdin is no longer read.
        self.commands_task = asyncio.ensure_future(self.commands())

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            out({"event": "message", "from": str(msg["from"]), "type": msg["type"], "body": msg["body"], "id": msg["id"]})

    def on_event(self, msg):
        event = msg.xml.find("{%s}event" % NS_EVENT)
        if event is None:
            return
        for items in event.findall("{%s}items" % NS_EVENT):
            out({
                "event": "pubsub",
                "from": str(msg["from"]),
                "node": items.get("node"),
                "items": [{"id": i.get("id"),
                           "xml": "".join(ET.tostring(c, encoding="unicode") for c in i)}
                          for i in items.findall("{%s}item" % NS_EVENT)],
            })

    def on_presence(self, pres):
        event = {"event": "presence", "type": pres["type"], "from": str(pres["from"])}
        caps = pres.xml.find("{http://jabber.org/protocol/caps}c")
        if caps is not None:
            event["caps"] = {k: caps.get(k) for k in ("hash", "node", "ver")}
        out(event)

    def on_disconnected(self, reason):
        # Say why, on stderr (the test's output) and as an event.
        if not self.quitting:
            print(f"xmppclient {self.boundjid}: disconnected: {reason}", file=sys.stderr, flush=True)
        out({"event": "disconnected", "reason": str(reason)})

    def on_stream_error(self, err):
        print(f"xmppclient {self.boundjid}: stream error: {err}", file=sys.stderr, flush=True)

    async def commands(self):
        loop = asyncio.get_event_loop()
        reader = asyncio.StreamReader()
        self.stdin_reader = reader
        self.stdin_pipe = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if DEBUG:
                print(f"xmppclient {self.boundjid} <- {line!r}", file=sys.stderr, flush=True)
            if not line:
                break
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            reply = {"id": cmd.get("id")}
            try:
                reply.update(await self.run(cmd))
            except IqError as e:
                reply.update(iq_error(e.iq))
            except IqTimeout:
                reply.update({"ok": False, "error": "timeout"})
            except Exception as e:  # report, never crash
                reply.update({"ok": False, "error": f"{type(e).__name__}: {e}"})
            out(reply)
            if cmd.get("cmd") == "quit":
                self.quitting = True
                self.disconnect()
                return

    async def run(self, cmd):
        c, to = cmd.get("cmd"), cmd.get("to")
        if c == "send":
            self.send_message(mto=to, mbody=cmd["body"], mtype=cmd.get("type", "chat"))
            return {"ok": True}
        if c == "send_many":
            # Many messages at once, as a flooding client would send them.
            for body in cmd["bodies"]:
                self.send_message(mto=to, mbody=body, mtype=cmd.get("type", "chat"))
            return {"ok": True, "sent": len(cmd["bodies"])}
        if c == "disco_info":
            r = await self.plugin["xep_0030"].get_info(jid=to, node=cmd.get("node"), timeout=TIMEOUT)
            info = r["disco_info"]
            return {"ok": True, "identities": [list(i[:3]) for i in info["identities"]],
                    "features": list(info["features"])}
        if c == "disco_items":
            r = await self.plugin["xep_0030"].get_items(jid=to, node=cmd.get("node"), timeout=TIMEOUT)
            return {"ok": True, "items": [{"jid": str(j), "node": n, "name": m}
                                          for (j, n, m) in r["disco_items"]["items"]]}
        if c == "disco_items_page":
            # One XEP-0059 page: {"max": N, "after": "..."} as given.
            iq = self.Iq()
            iq["to"] = to
            iq["type"] = "get"
            rsm = "".join(f"<{k}>{cmd[k]}</{k}>" for k in ("max", "after") if k in cmd)
            iq.append(ET.fromstring(
                "<query xmlns='http://jabber.org/protocol/disco#items'>"
                f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set></query>"))
            r = await iq.send(timeout=TIMEOUT)
            q = r.xml.find("{http://jabber.org/protocol/disco#items}query")
            nodes = [i.get("node") for i in q.findall("{http://jabber.org/protocol/disco#items}item")]
            s = q.find("{http://jabber.org/protocol/rsm}set")
            text = lambda n: (s.find("{http://jabber.org/protocol/rsm}" + n).text
                              if s is not None and s.find("{http://jabber.org/protocol/rsm}" + n) is not None
                              else None)
            return {"ok": True, "nodes": nodes, "count": text("count"), "last": text("last")}
        if c == "pubsub_subscribe":
            await self.plugin["xep_0060"].subscribe(to, cmd["node"], timeout=TIMEOUT)
            return {"ok": True}
        if c == "pubsub_unsubscribe":
            await self.plugin["xep_0060"].unsubscribe(to, cmd["node"], timeout=TIMEOUT)
            return {"ok": True}
        if c == "pubsub_items":
            r = await self.plugin["xep_0060"].get_items(to, cmd["node"], timeout=TIMEOUT)
            items = r["pubsub"]["items"]
            return {"ok": True, "items": [
                {"id": i["id"], "xml": "".join(ET.tostring(ch, encoding="unicode") for ch in i.xml)}
                for i in items]}
        if c == "verify_caps":
            # XEP-0115 §5.4: fetch node#ver and recompute ver ourselves.
            self.register_plugin("xep_0115")
            node = "%s#%s" % (cmd["node"], cmd["ver"])
            r = await self.plugin["xep_0030"].get_info(jid=to, node=node, timeout=TIMEOUT)
            computed = self.plugin["xep_0115"].generate_verstring(r["disco_info"], cmd["hash"])
            return {"ok": True, "computed": computed}
        if c == "pubsub_subscriptions":
            r = await self.plugin["xep_0060"].get_subscriptions(to, node=cmd.get("node"), timeout=TIMEOUT)
            subs = r["pubsub"]["subscriptions"]
            return {"ok": True, "subscriptions": [
                {"node": s["node"], "jid": str(s["jid"]), "subscription": s["subscription"]}
                for s in subs]}
        if c == "pubsub_affiliations":
            r = await self.plugin["xep_0060"].get_affiliations(to, node=cmd.get("node"), timeout=TIMEOUT)
            affs = r["pubsub"]["affiliations"]
            return {"ok": True, "affiliations": [
                {"node": a["node"], "affiliation": a["affiliation"]} for a in affs]}
        if c == "ping":
            await self.plugin["xep_0199"].send_ping(to, timeout=TIMEOUT)
            return {"ok": True}
        if c == "iq_raw":
            iq = self.Iq()
            iq["to"] = to
            iq["type"] = cmd.get("type", "get")
            iq.append(ET.fromstring(cmd["xml"]))
            await iq.send(timeout=TIMEOUT)
            return {"ok": True}
        if c == "iq_results":
            # IQ results with ids job-PREFIXFIRST..job-PREFIXLAST and one
            # payload, as a stranger answering jobs it was never sent
            # (guessing their ids) would send them.
            prefix = cmd.get("prefix", "")
            for n in range(cmd["first"], cmd["last"] + 1):
                self.send_raw(f"<iq type='result' id='job-{prefix}{n}' to='{to}'>{cmd['xml']}</iq>")
            return {"ok": True}
        if c == "subscribe_presence":
            self.send_presence(pto=to, ptype="subscribe")
            return {"ok": True}
        if c == "quit":
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {c}"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    xmpp = Driver(a.jid, a.password)
    xmpp.plugin["feature_mechanisms"].unencrypted_plain = True
    xmpp.connect(host=a.host, port=a.port)
    asyncio.get_event_loop().run_until_complete(xmpp.disconnected)


if __name__ == "__main__":
    main()
