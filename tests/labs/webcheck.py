#!/usr/bin/env python3
"""Drives CertWatch's web front for tests/web.rs with real third-party tools.

    webcheck.py browse BASE OUTDIR WIDTH HEIGHT DOMAIN...
        Headless Chromium (Selenium + chromedriver): loads BASE/, types each
        DOMAIN into the form, submits, waits for the domain page's verdict,
        reads what the page shows and saves a PNG screenshot.
    webcheck.py inspect BASE OUTDIR PATH
        Loads BASE+PATH in Chromium and reports every element and script
        the DOM holds, and whether any script ran (window.__pwned).
    webcheck.py metrics BASE
        Scrapes /metrics and parses it with prometheus_client's parser.
    webcheck.py atom BASE DOMAIN
        Parses the domain's Atom feed with feedparser.
    webcheck.py badge BASE DOMAIN
        Fetches the badge and parses it as XML.
    webcheck.py post BASE SOURCE_IP DOMAIN
        POSTs the form from SOURCE_IP (a loopback address to bind).

Prints one JSON object on stdout.
"""

import http.client
import json
import os
import sys
import time
import urllib.parse
import xml.etree.ElementTree as ET

WAIT = 90


def driver(width, height):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-proxy-server", "--hide-scrollbars", f"--window-size={width},{height}"):
        opts.add_argument(a)
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    d = webdriver.Chrome(options=opts, service=service)
    # The viewport itself, not the window, is what a phone has.
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
    return d


def full_page_png(d, path):
    """The whole page, not just the viewport (Chromium's DevTools protocol)."""
    import base64

    size = d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = d.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))


def text_of(d, css):
    from selenium.webdriver.common.by import By
    found = d.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else None


def browse(base, outdir, width, height, domains):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d = driver(width, height)
    pages = []
    try:
        for domain in domains:
            d.get(base + "/")
            front = {"overflow": d.execute_script(
                "return document.documentElement.scrollWidth > window.innerWidth")}
            box = d.find_element(By.NAME, "domain")
            box.clear()
            box.send_keys(domain)
            d.find_element(By.CSS_SELECTOR, "form.check button[type=submit]").click()
            saw_progress = False
            deadline = time.time() + WAIT
            while time.time() < deadline:
                if d.find_elements(By.ID, "checking"):
                    saw_progress = True
                if d.find_elements(By.ID, "verdict") and not d.find_elements(By.ID, "checking"):
                    break
                time.sleep(0.2)
            WebDriverWait(d, 5).until(lambda x: x.find_elements(By.ID, "verdict"))
            shot = os.path.join(outdir, f"{domain}-{width}x{height}.png")
            full_page_png(d, shot)
            link = d.find_elements(By.ID, "xmpp-link")
            pages.append({
                "domain": domain,
                "url": d.current_url,
                "front_overflow": front["overflow"],
                "saw_progress": saw_progress,
                "verdict": text_of(d, "#verdict"),
                "verdict_class": d.find_element(By.ID, "verdict").get_attribute("class"),
                "endpoints": [e.text for e in d.find_elements(By.CSS_SELECTOR, ".endpoint")],
                "zone": text_of(d, "#zone-lines"),
                "advice": text_of(d, "#advice"),
                "xmpp_href": link[0].get_attribute("href") if link else None,
                "feed_href": text_of(d, "#feed-link"),
                "overflow": d.execute_script(
                    "return document.documentElement.scrollWidth > window.innerWidth"),
                "scroll_width": d.execute_script("return document.documentElement.scrollWidth"),
                "inner_width": d.execute_script("return window.innerWidth"),
                "screenshot": shot,
            })
    finally:
        d.quit()
    return {"pages": pages}


def inspect(base, outdir, path):
    from selenium.webdriver.common.by import By

    d = driver(1280, 900)
    try:
        d.get(base + path)
        full_page_png(d, os.path.join(outdir, "inspect-" + path.strip("/").replace("/", "-") + ".png"))
        return {
            "scripts": [s.get_attribute("src") for s in d.find_elements(By.TAG_NAME, "script")],
            "imgs": [i.get_attribute("src") for i in d.find_elements(By.TAG_NAME, "img")],
            "onerror": len(d.find_elements(By.CSS_SELECTOR, "[onerror]")),
            "pwned": d.execute_script("return window.__pwned === true || document.title.includes('pwned')"),
            "body_text": d.find_element(By.TAG_NAME, "main").text,
            "alerts_text": text_of(d, "#alerts"),
        }
    finally:
        d.quit()


def fetch(base, path, source=None, method="GET", body=None):
    u = urllib.parse.urlsplit(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30,
                                   source_address=(source, 0) if source else None)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read().decode("utf-8")
    c.close()
    return r.status, dict(r.getheaders()), data


def metrics(base):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    status, headers, text = fetch(base, "/metrics")
    families = {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = {"type": fam.type,
                              "samples": [[s.name, s.labels, s.value] for s in fam.samples]}
    return {"status": status, "content_type": headers.get("content-type"), "families": families}


def atom(base, domain):
    import feedparser

    status, headers, text = fetch(base, f"/domain/{domain}.atom")
    f = feedparser.parse(text)
    return {"status": status, "content_type": headers.get("content-type"),
            "bozo": bool(f.bozo), "version": f.version,
            "ids": [e.id for e in f.entries], "titles": [e.title for e in f.entries]}


def badge(base, domain):
    status, headers, text = fetch(base, f"/domain/{domain}/badge.svg")
    root = ET.fromstring(text)
    return {"status": status, "cache_control": headers.get("cache-control"),
            "content_type": headers.get("content-type"), "root": root.tag,
            "text": " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))}


def post(base, source, domain):
    status, headers, text = fetch(base, "/check", source=source, method="POST",
                                  body="domain=" + urllib.parse.quote(domain))
    return {"status": status, "location": headers.get("location"), "body": text}


def main():
    verb, args = sys.argv[1], sys.argv[2:]
    if verb == "browse":
        out = browse(args[0], args[1], int(args[2]), int(args[3]), args[4:])
    elif verb == "inspect":
        out = inspect(args[0], args[1], args[2])
    elif verb == "metrics":
        out = metrics(args[0])
    elif verb == "atom":
        out = atom(args[0], args[1])
    elif verb == "badge":
        out = badge(args[0], args[1])
    elif verb == "post":
        out = post(args[0], args[1], args[2])
    else:
        raise SystemExit(f"unknown verb {verb}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
