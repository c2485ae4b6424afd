#!/usr/bin/env python3
"""moto's server, handling one request at a time.

DynamoDB applies each conditional write to an item atomically. moto's threaded server does
not: two updates of one item that race (a cancel and a claim) can both pass their conditions.
A lock around every request gives the tests DynamoDB's guarantee back, at little cost, since
the GIL keeps moto on one core anyway. Nothing here long-polls, so no request holds the lock
for long.

It also takes out what made moto 5.2.5 slow in ways a real AWS is not, with the same answers:
- SQS worked out every queue attribute (the approximate counts each walk the whole queue) to
  read the retention period of each message a receive hands out, and one flag for each
  message sent;
- DynamoDB Streams' GetRecords ran its records, already in DynamoDB's JSON, through the
  generic serializer: about 3 ms a record, 3 s a page;
- routing each request listed moto's own package folders, twice.
Together they took the 10,000-recipient cost scenario (tests/aws_cost.rs) from 864 s to
555 s on the 2-core machine (2026-12-07). Then, from 678 s to 550 s in a slower hour:
- DynamoDB's item operations (UpdateItem above all) ran their answers, plain JSON already,
  through the same generic serializer; they are written out as they are, with the top-level
  keys the serializer keeps (checked answer by answer against it over every AWS suite);
- a log line per request; only the requests that did not succeed are logged now.

Usage: moto_server.py [-H host] [-p port]
"""

import argparse
import base64
import datetime
import functools
import json
import threading

from moto import backends
from moto.core.utils import get_service_model, unix_time
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.sqs.models import Queue, SQSBackend
from werkzeug.serving import run_simple


def retained(backend, queue_name, message):
    """moto's `is_message_valid_based_on_retention_period`, without the queue's other
    attributes."""
    queue = backend.get_queue(queue_name)
    return int(queue.message_retention_period) + message.sent_timestamp / 1000 > unix_time()


SQSBackend.is_message_valid_based_on_retention_period = retained

moto_send_message = SQSBackend.send_message

# A queue's attributes without the approximate counts, listed once rather than on every send.
COUNTLESS_ATTRIBUTES = [a for a in Queue.BASE_ATTRIBUTES if not a.startswith("Approximate")]


def send_without_counts(backend, queue_name, *args, **kwargs):
    """moto's `send_message`, whose one look at the queue's attributes (for content-based
    deduplication) skips the approximate counts, each a walk of the whole queue. Requests run
    one at a time (`OneAtATime`), so no other request sees the queue meanwhile."""
    queue = backend.get_queue(queue_name)
    queue.BASE_ATTRIBUTES = COUNTLESS_ATTRIBUTES
    try:
        return moto_send_message(backend, queue_name, *args, **kwargs)
    finally:
        del queue.BASE_ATTRIBUTES


SQSBackend.send_message = send_without_counts


def stream_records(handler):
    """moto's `GetRecords`, its records (already in DynamoDB's JSON) written out as they are:
    its generic serializer took about 3 ms a record, 3 s a page."""
    limit = handler._get_param("Limit") or 1000
    result = handler.backend.get_records(handler._get_param("ShardIterator"), limit)
    return json.dumps(result, default=json_value)


def json_value(value):
    """What JSON has no type for, as the serializer writes it: a record's
    `ApproximateCreationDateTime`, and binary attributes (base64)."""
    if isinstance(value, datetime.datetime):
        return round(unix_time(value), 3)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} in a stream record")


DynamoDBStreamsHandler.get_records = stream_records

# moto lists its own package's folders (a directory walk) to route every request, twice.
MOTO_MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: MOTO_MODULES


# DynamoDB's item operations whose answers are plain JSON already (attribute values,
# consumed capacity, keys), which moto's generic serializer walks shape by shape: about a
# third of the time moto spent on an UpdateItem.
PLAIN_JSON_ACTIONS = frozenset({
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan",
    "BatchGetItem", "BatchWriteItem", "TransactGetItems", "TransactWriteItems",
})

moto_dynamodb_serialized = DynamoHandler.serialized


def dynamodb_serialized(handler, action_result):
    """moto's answer to an item operation, written out with `json.dumps`; errors and every
    other operation go through moto's serializer."""
    result, action = action_result.result, handler._get_action()
    if isinstance(result, Exception) or action not in PLAIN_JSON_ACTIONS:
        return moto_dynamodb_serialized(handler, action_result)
    members = output_members(action)
    answer = without_nulls({k: v for k, v in result.items() if k in members})
    headers = {"Content-Type": "application/x-amz-json-1.0", **handler.response_headers}
    return 200, headers, json.dumps(answer, default=json_value)


@functools.cache
def output_members(action):
    """The top-level keys of an operation's answer: moto adds some of its own (DeleteItem's
    `ConsumedCapacityUnits`), which the serializer leaves out."""
    return frozenset(get_service_model("dynamodb").operation_model(action).output_shape.members)


def without_nulls(value):
    """The answer without the `None`s the serializer leaves out."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


DynamoHandler.serialized = dynamodb_serialized


class QuietRequestHandler(MotoRequestHandler):
    """moto's request handler, logging only the requests that did not succeed: a line per
    request cost moto a fifth of its time."""

    def log_request(self, code="-", size="-"):
        if not str(code).startswith("2"):
            super().log_request(code, size)


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
               request_handler=QuietRequestHandler)


if __name__ == "__main__":
    main()
