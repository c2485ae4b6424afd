#!/usr/bin/env python3
"""Init time of each Lambda function: from process start to its first request to the Lambda
Runtime API (GET /2018-06-01/runtime/invocation/next), which a function makes once its clients
are built. A small Runtime API stub on loopback answers nothing: the function is timed, then
stopped. Usage: cold_start.py <dir with the native release binaries> [runs]."""

import http.server
import os
import statistics
import subprocess
import sys
import threading
import time

FUNCTIONS = {
    # binary: extra environment (the rest is common below)
    "api": {},
    "webhooks": {},
    "enqueue": {},
    "dispatch": {"HERALD_LANE": "P1"},
    "suppression": {},
    "health-checker": {},
    "stats": {},
}

first_poll = threading.Event()


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next"):
            first_poll.set()
        # No invocation: the function waits until it is stopped.
        time.sleep(5)

    def log_message(self, *args):
        pass


def environment(port):
    stack = "herald-cold-start"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": "cold-start",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": "cold-start",
        "AWS_LAMBDA_LOG_GROUP_NAME": "cold-start",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "cold",
        "AWS_SECRET_ACCESS_KEY": "start",
        "HERALD_LOG": "warn",
        "HERALD_SES_FROM": "news@example.com",
    }
    for table in ["messages", "idempotency", "templates", "tenants", "bulk", "suppressions",
                  "rate-limits", "health", "inbound"]:
        env[f"HERALD_{table.upper().replace('-', '_')}_TABLE"] = f"{stack}-{table}"
    for lane in range(5):
        env[f"HERALD_QUEUE_URL_P{lane}"] = f"https://sqs.us-east-1.amazonaws.com/1/{stack}-P{lane}"
    env["HERALD_BULK_QUEUE_URL"] = f"https://sqs.us-east-1.amazonaws.com/1/{stack}-bulk"
    return env


def init_ms(binary, env):
    first_poll.clear()
    started = time.perf_counter()
    process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    polled = first_poll.wait(timeout=10)
    elapsed = (time.perf_counter() - started) * 1000
    process.kill()
    _, err = process.communicate()
    if not polled:
        sys.exit(f"{binary} never asked for an invocation:\n{err.decode()[-2000:]}")
    return elapsed


def main():
    directory = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    print(f"{'function':<16} {'init p50 ms':>12} {'init max ms':>12}  ({runs} starts each)")
    for name, extra in FUNCTIONS.items():
        env = environment(port) | extra
        times = [init_ms(os.path.join(directory, name), env) for _ in range(runs)]
        print(f"{name:<16} {statistics.median(times):>12.1f} {max(times):>12.1f}")
        print(f"cold_start_{name.replace('-', '_')}_ms {statistics.median(times):.1f}")


if __name__ == "__main__":
    main()
