#!/usr/bin/env python3
"""moto's server, handling one request at a time.

DynamoDB applies each conditional write to an item atomically. moto's threaded server does
not: two updates of one item that race (a cancel and a claim) can both pass their conditions.
A lock around every request gives the tests DynamoDB's guarantee back, at little cost, since
the GIL keeps moto on one core anyway. Nothing here long-polls, so no request holds the lock
for long.

Usage: moto_server.py [-H host] [-p port]
"""

import argparse
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


class OneAtATime:
    """WSGI middleware: the whole request, body included, under one lock."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            return list(self.app(environ, start_response))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, OneAtATime(app), threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
