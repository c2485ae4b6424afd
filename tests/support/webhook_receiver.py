"""A webhook receiver for the outbound webhook tests, written apart from Herald: it checks every
delivery with the `standardwebhooks` package from PyPI (the specification's own Python library).

    webhook_receiver.py --secrets FILE --log FILE [--plan 500,500,sleep,200,...]

Prints `listening <port>` once it serves on 127.0.0.1. For each request it answers the next
status of the plan (`sleep` waits 3 s, longer than the tests' delivery timeout, then answers
200; `hang` logs the request on arrival, then holds it for 60 s; after the plan, 200), and
appends a JSON line to the log: the Standard Webhooks headers, the indexes of the secrets (a
JSON list in FILE, read afresh each time) that verify it, the parsed body, the raw body, the
path, every header and the status answered (null for `hang`: logged before any answer).
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secrets", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--plan", default="")
    args = parser.parse_args()
    plan = [p for p in args.plan.split(",") if p]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with open(args.secrets) as f:
                secrets = json.load(f)
            verified_by = []
            for i, secret in enumerate(secrets):
                try:
                    Webhook(secret).verify(body, headers, json_parse=False)
                    verified_by.append(i)
                except Exception:
                    pass
            with lock:
                step = plan.pop(0) if plan else "200"
            planned = step
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            line = {
                "webhook_id": headers.get("webhook-id"),
                "timestamp": headers.get("webhook-timestamp"),
                "signatures": headers.get("webhook-signature", "").split(" "),
                "verified_by": verified_by,
                "body": parsed,
                "raw": body.decode("utf-8", "replace"),
                "path": self.path,
                "headers": headers,
                "answered": None,
                "planned": planned,
            }
            if step == "hang":
                # Logged on arrival: a test sees the request is in flight while it hangs.
                with lock, open(args.log, "a") as f:
                    f.write(json.dumps(line) + "\n")
                time.sleep(60)
                step = "200"
            else:
                if step == "sleep":
                    time.sleep(3)
                    step = "200"
                line["answered"] = int(step)
                with lock, open(args.log, "a") as f:
                    f.write(json.dumps(line) + "\n")
            status = int(step)
            try:
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.end_headers()
                self.wfile.write(b"received %d" % status)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
