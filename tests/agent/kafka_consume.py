#!/usr/bin/env python3
"""Read every message of some Kafka topics from the beginning with an independent client (confluent-kafka,
librdkafka) and print them as one JSON array: topic, partition, offset, key, value (parsed JSON).

Used by tests/agent/kafka.rs to check what herald's Kafka sink wrote. It assigns every partition of each topic
directly (no consumer group), reads until it has `--count` messages, then keeps reading for `--settle` seconds
so that any extra message (a duplicate) is seen too; it gives up after `--timeout` seconds.

usage: kafka_consume.py BOOTSTRAP TOPIC[,TOPIC...] --count N [--timeout S] [--settle S]
       [--sasl-mechanism M --sasl-username U --sasl-password P]
"""

import argparse
import json
import sys
import time

from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING


def main():
    p = argparse.ArgumentParser()
    p.add_argument("bootstrap")
    p.add_argument("topics")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--sasl-mechanism")
    p.add_argument("--sasl-username")
    p.add_argument("--sasl-password")
    args = p.parse_args()

    config = {
        "bootstrap.servers": args.bootstrap,
        "group.id": "herald-test-reader",
        "enable.auto.commit": False,
    }
    if args.sasl_mechanism:
        config.update(
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": args.sasl_mechanism,
                "sasl.username": args.sasl_username,
                "sasl.password": args.sasl_password,
            }
        )
    consumer = Consumer(config)
    topics = args.topics.split(",")
    meta = consumer.list_topics(timeout=10)
    assignment = []
    for t in topics:
        if t not in meta.topics or meta.topics[t].error is not None:
            print(f"topic {t} not found", file=sys.stderr)
            sys.exit(2)
        for partition in meta.topics[t].partitions:
            assignment.append(TopicPartition(t, partition, OFFSET_BEGINNING))
    consumer.assign(assignment)

    out = []
    deadline = time.monotonic() + args.timeout
    settle_until = None
    while time.monotonic() < deadline:
        if settle_until is None and len(out) >= args.count:
            settle_until = time.monotonic() + args.settle
        if settle_until is not None and time.monotonic() >= settle_until:
            break
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            # End-of-partition and transient errors: keep polling until the deadline.
            continue
        key = msg.key()
        out.append(
            {
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": key.decode() if key is not None else None,
                "value": json.loads(msg.value()),
            }
        )
    consumer.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
