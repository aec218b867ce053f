#!/usr/bin/env python3
"""Load that once made the bot deadlock, from real clients (slixmpp).

    stress.py --host 127.0.0.1 --port C2S --component certwatch.localhost \
              --domain localhost --users s0 s1 ... --rounds 10 --watchdog 10

Each round takes four fresh accounts (per-account limits reset only after a
minute): the first sends 300 PubSub subscribe IQs at once, with an
unsubscribe racing every third one; the other three send 20 chat commands
each at once (one of them subscribes and unsubscribes the same domains in
turn). Every IQ must be answered (result or error) and every chat command
must get its reply within --watchdog seconds, or the script stops at once
with exit status 1 and a JSON line saying what went unanswered. On success
it prints one JSON line per round and a summary line. Loopback only.
"""

import argparse
import asyncio
import json
import sys
import time

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout


class Account(slixmpp.ClientXMPP):
    def __init__(self, jid, password, component):
        super().__init__(jid, password)
        self.register_plugin("xep_0060")
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.component = component
        self.ready = asyncio.Event()
        self.replies = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)

    async def on_start(self, _):
        self.ready.set()

    def on_message(self, msg):
        if msg["from"].bare == self.component and msg["type"] in ("chat", "normal") and msg["body"]:
            self.replies.put_nowait((time.monotonic(), msg["body"]))


def fail(what, **facts):
    print(json.dumps({"event": "stalled", "what": what, **facts}), flush=True)
    sys.exit(1)


async def connect(args, user):
    acct = Account(f"{user}@{args.domain}", f"{user}-pw", args.component)
    acct.plugin["feature_mechanisms"].unencrypted_plain = True
    acct.connect(host=args.host, port=args.port)
    try:
        await asyncio.wait_for(acct.ready.wait(), 30)
    except asyncio.TimeoutError:
        fail("login", user=user)
    return acct


async def one_iq(acct, op, node, watchdog):
    started = time.monotonic()
    try:
        if op == "subscribe":
            await acct["xep_0060"].subscribe(acct.component, node, timeout=watchdog)
        else:
            await acct["xep_0060"].unsubscribe(acct.component, node, timeout=watchdog)
        outcome = "result"
    except IqError as e:
        outcome = e.iq["error"]["condition"]
    except IqTimeout:
        fail("iq", user=str(acct.boundjid.bare), op=op, node=node,
             waited=round(time.monotonic() - started, 1))
    return outcome, time.monotonic() - started


async def iq_burst(acct, round_no, watchdog):
    jobs = []
    for i in range(300):
        node = f"d{(round_no * 300 + i) % 400}.bench.test"
        jobs.append(one_iq(acct, "subscribe", node, watchdog))
        if i % 3 == 0:
            jobs.append(one_iq(acct, "unsubscribe", node, watchdog))
    results = await asyncio.gather(*jobs)
    counts = {}
    for outcome, _ in results:
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts, max(t for _, t in results)


async def chat_burst(acct, bodies, watchdog):
    started = time.monotonic()
    for body in bodies:
        acct.send_message(mto=acct.component, mbody=body, mtype="chat")
    got, slowest, last = [], 0.0, started
    while len(got) < len(bodies):
        try:
            at, body = await asyncio.wait_for(acct.replies.get(), watchdog)
        except asyncio.TimeoutError:
            fail("chat", user=str(acct.boundjid.bare), sent=len(bodies), answered=len(got),
                 waited=round(time.monotonic() - last, 1))
        slowest = max(slowest, at - last)
        last = at
        got.append(body)
    return got, slowest


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--component", required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--users", nargs="+", required=True)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--watchdog", type=float, default=10.0)
    args = p.parse_args()
    if len(args.users) < 4 * args.rounds:
        fail("setup", detail="four accounts per round are needed")
    totals = {"iq": {}, "chat_replies": 0, "subscribed_by_chat": 0}
    for r in range(args.rounds):
        users = args.users[4 * r: 4 * r + 4]
        accts = await asyncio.gather(*(connect(args, u) for u in users))
        base = r * 20
        racing = []
        for i in range(10):
            racing += [f"subscribe d{base + i}.bench.test", f"unsubscribe d{base + i}.bench.test"]
        plain = [[f"subscribe d{base + 200 + k * 20 + i}.bench.test" for i in range(20)] for k in range(2)]
        started = time.monotonic()
        (iq_counts, iq_slowest), *chats = await asyncio.gather(
            iq_burst(accts[0], r, args.watchdog),
            chat_burst(accts[1], racing, args.watchdog),
            chat_burst(accts[2], plain[0], args.watchdog),
            chat_burst(accts[3], plain[1], args.watchdog),
        )
        replies = [b for got, _ in chats for b in got]
        subscribed = sum(1 for b in replies if b.startswith("Subscribed to"))
        for k, v in iq_counts.items():
            totals["iq"][k] = totals["iq"].get(k, 0) + v
        totals["chat_replies"] += len(replies)
        totals["subscribed_by_chat"] += subscribed
        print(json.dumps({
            "event": "round", "round": r, "iq": iq_counts,
            "chat_replies": len(replies), "subscribed_by_chat": subscribed,
            "slowest_iq_s": round(iq_slowest, 3),
            "slowest_chat_gap_s": round(max(s for _, s in chats), 3),
            "took_s": round(time.monotonic() - started, 2),
        }), flush=True)
        for a in accts:
            a.disconnect()
    print(json.dumps({"event": "done", **totals}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
