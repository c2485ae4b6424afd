"""Times the console's pages against a running `herald serve` holding many messages.

    ./target/release/herald serve --no-workers --data-dir /tmp/console-timing --bind 127.0.0.1:18080
    python3 scripts/console_timing.py http://127.0.0.1:18080 <the printed dev key> [messages]

Loads `messages` (default 1,000,000; 0 to time what is already there) through `POST /v1/messages/bulk` in requests of 10,000
(with `--no-workers` they stay queued: the lanes hold the whole backlog), signs in to the
console, then fetches each page 20 times and prints its p50 and slowest server-side time (the
response's arrival, over loopback) and its size; then the overview's live refresh at its own
pace, every 3 s.
"""

import http.cookiejar
import json
import re
import statistics
import sys
import time
import urllib.parse
import urllib.request

BASE, KEY = sys.argv[1], sys.argv[2]
TOTAL = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
jar = http.cookiejar.CookieJar()
browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))


def api(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method, headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def load():
    bulk_id = None
    started = time.time()
    for start in range(0, TOTAL, 10_000):
        recipients = [{"to": f"user{i}@example.com"} for i in range(start, min(start + 10_000, TOTAL))]
        reply = api("POST", "/v1/messages/bulk", {"channel": "email", "priority": "P3", "subject": "News",
                                                  "body": "Hello", "recipients": recipients})
        bulk_id = reply["bulk_id"]
    print(f"loaded {TOTAL} messages in {time.time() - started:.1f} s")
    return bulk_id


def sign_in():
    page = browser.open(BASE + "/console/sign-in").read().decode()
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page).group(1)
    form = urllib.parse.urlencode({"key": KEY, "csrf": csrf}).encode()
    # The sign-in lands on the overview, whose first look counts the lanes.
    t = time.perf_counter()
    browser.open(BASE + "/console/sign-in", data=form).read()
    print(f"sign-in and the first overview (counts the lanes): {(time.perf_counter() - t) * 1000:.1f} ms")


def timed(path, runs=20, every=0.0):
    times, size = [], 0
    for _ in range(runs):
        time.sleep(every)
        t = time.perf_counter()
        with browser.open(BASE + path) as r:
            body = r.read()
            assert r.status == 200, (path, r.status)
        times.append((time.perf_counter() - t) * 1000)
        size = len(body)
    print(f"{path[:60]:<60} p50 {statistics.median(times):6.1f} ms  max {max(times):6.1f} ms  {size / 1024:5.1f} KB")


def main():
    bulk_id = load()
    sign_in()
    newest = api("GET", "/v1/messages?limit=1")["items"][0]["id"]
    bulk_pages = [f"/console/messages?bulk_id={bulk_id}", f"/console/bulk/{bulk_id}"] if bulk_id else []
    for path in ["/console", "/console/overview/live", "/console/messages",
                 "/console/messages?to=user500000%40example.com", "/console/messages?status=failed",
                 f"/console/messages/{newest}", *bulk_pages, "/console/bulk", "/console/suppressions", "/console/dead-letters", "/console/templates", "/console/threads",
                 "/console/numbers", "/console/audit"]:
        timed(path)
    # As the overview's script asks: every 3 s, so each look finds the lane count a few seconds
    # old (answered at once, recounted behind the answer).
    print("the overview's live refresh, every 3 s:")
    timed("/console/overview/live", runs=10, every=3.0)


if __name__ == "__main__":
    main()
