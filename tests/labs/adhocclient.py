#!/usr/bin/env python3
"""xmppclient.py with slixmpp's XEP-0050 plugin: ad-hoc commands driven over JSON lines.

    adhocclient.py --jid alice@localhost --password alice-pw --host 127.0.0.1 --port 15222

Every command of xmppclient.py, and:
  {"cmd": "adhoc_commands", "to": JID}                  get_commands (disco#items)
  {"cmd": "adhoc_start", "to": JID, "node": N}          start_command: the first response
  {"cmd": "adhoc_complete", "sessionid": S, "values": {VAR: VALUE}}
                                                        complete_command with a submitted form
  {"cmd": "adhoc_cancel", "sessionid": S}               cancel_command
  {"cmd": "adhoc_exec", "to": JID, "node": N, "values": {...}, "action": A, "sessionid": S,
   "timeout": SECONDS}                                  send_command, one request (values: a form)
A response is {"ok": true, "status", "sessionid", "notes": [{type, text}],
"form": {type, title, fields: [{var, type, label, required, options, values}],
"reported": [var], "items": [{var: value}]}}; an error is {"ok": false,
"error": CONDITION, "detail": XEP-0050 condition or null}.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import xmppclient  # noqa: E402
from slixmpp.xmlstream import ET  # noqa: E402

NS_CMD = "http://jabber.org/protocol/commands"
NS_DATA = "jabber:x:data"


def parse_form(x):
    def field(f):
        return {
            "var": f.get("var"),
            "type": f.get("type"),
            "label": f.get("label"),
            "required": f.find("{%s}required" % NS_DATA) is not None,
            "options": [o.findtext("{%s}value" % NS_DATA) for o in f.findall("{%s}option" % NS_DATA)],
            "values": [v.text or "" for v in f.findall("{%s}value" % NS_DATA)],
        }

    reported = x.find("{%s}reported" % NS_DATA)
    return {
        "type": x.get("type"),
        "title": x.findtext("{%s}title" % NS_DATA),
        "fields": [field(f) for f in x.findall("{%s}field" % NS_DATA)],
        "reported": [f.get("var") for f in reported.findall("{%s}field" % NS_DATA)] if reported is not None else None,
        "items": [
            {f.get("var"): f.findtext("{%s}value" % NS_DATA) for f in item.findall("{%s}field" % NS_DATA)}
            for item in x.findall("{%s}item" % NS_DATA)
        ],
    }


def parse_response(iq):
    if iq["type"] == "error":
        return error_of(iq)
    cmd = iq.xml.find("{%s}command" % NS_CMD)
    x = cmd.find("{%s}x" % NS_DATA)
    return {
        "ok": True,
        "node": cmd.get("node"),
        "status": cmd.get("status"),
        "sessionid": cmd.get("sessionid"),
        "notes": [{"type": n.get("type"), "text": n.text} for n in cmd.findall("{%s}note" % NS_CMD)],
        "actions": [a.tag.split("}")[1] for a in cmd.findall("{%s}actions/*" % NS_CMD)],
        "form": parse_form(x) if x is not None else None,
    }


def error_of(iq):
    err = iq.xml.find("{jabber:client}error")
    detail = None
    if err is not None:
        for child in err:
            if child.tag.startswith("{%s}" % NS_CMD):
                detail = child.tag.split("}")[1]
    return {"ok": False, "error": iq["error"]["condition"], "detail": detail}


def submit_form(values):
    x = ET.Element("{%s}x" % NS_DATA, {"type": "submit"})
    for var, value in values.items():
        f = ET.SubElement(x, "{%s}field" % NS_DATA, {"var": var})
        ET.SubElement(f, "{%s}value" % NS_DATA).text = value
    return x


class AdhocDriver(xmppclient.Driver):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0050")
        self.adhoc_sessions = {}

    def flow(self, start):
        """Runs one step of the plugin's session workflow; returns its response."""
        done = asyncio.get_event_loop().create_future()

        def answered(iq, session):
            result = parse_response(iq)
            if result.get("sessionid"):
                self.adhoc_sessions[result["sessionid"]] = session
            if not done.done():
                done.set_result(result)

        start({"next": answered, "error": answered})
        return asyncio.wait_for(done, xmppclient.TIMEOUT)

    async def run(self, cmd):
        c = cmd.get("cmd")
        xep = self.plugin["xep_0050"]
        if c == "adhoc_commands":
            r = await xep.get_commands(jid=cmd["to"], timeout=xmppclient.TIMEOUT)
            return {"ok": True, "items": [{"jid": str(j), "node": n, "name": m}
                                          for (j, n, m) in r["disco_items"]["items"]]}
        if c == "adhoc_start":
            return await self.flow(lambda s: xep.start_command(cmd["to"], cmd["node"], s))
        if c in ("adhoc_complete", "adhoc_cancel"):
            session = self.adhoc_sessions.get(cmd["sessionid"])
            if session is None:
                return {"ok": False, "error": "no such client session"}

            def step(handlers):
                session.update(handlers)
                if c == "adhoc_cancel":
                    session["payload"] = None
                    xep.cancel_command(session)
                else:
                    session["payload"] = [submit_form(cmd.get("values", {}))]
                    xep.complete_command(session)
            return await self.flow(step)
        if c == "adhoc_exec":
            payload = submit_form(cmd["values"]) if "values" in cmd else None
            try:
                iq = await xep.send_command(cmd["to"], cmd["node"], action=cmd.get("action", "execute"),
                                            payload=payload, sessionid=cmd.get("sessionid"),
                                            timeout=cmd.get("timeout", xmppclient.TIMEOUT))
            except xmppclient.IqError as e:
                return error_of(e.iq)
            return parse_response(iq)
        return await super().run(cmd)


if __name__ == "__main__":
    xmppclient.Driver = AdhocDriver
    xmppclient.main()
