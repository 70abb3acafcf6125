#!/usr/bin/env python3
"""Shows what Emporium wrote to Kafka, read with an outside client (confluent-kafka from PyPI).

    pip install confluent-kafka
    scripts/kafka-peek.py [--brokers 127.0.0.1:9092] [--max 10] TOPIC

Reads TOPIC from the beginning with a throwaway consumer group (it commits nothing) and prints, for
each record: partition, offset, key, headers (correlation-id, causation-id, event-type, traceparent,
...) and the start of the payload. Stops after --max records or when nothing arrived for 5 seconds.
"""

import argparse
import sys
import uuid

try:
    from confluent_kafka import Consumer, KafkaException
except ImportError:
    sys.exit("kafka-peek needs confluent-kafka: pip install confluent-kafka")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topic")
    parser.add_argument("--brokers", default="127.0.0.1:9092")
    parser.add_argument("--max", type=int, default=10)
    args = parser.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": f"kafka-peek-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    seen = 0
    try:
        while seen < args.max:
            message = consumer.poll(5.0)
            if message is None:
                break
            if message.error():
                raise KafkaException(message.error())
            seen += 1
            key = message.key().decode("utf-8", "replace") if message.key() else None
            print(f"{message.topic()}[{message.partition()}]@{message.offset()} key={key}")
            for name, value in message.headers() or []:
                text = value.decode("utf-8", "replace") if value is not None else None
                print(f"  {name}: {text}")
            payload = (message.value() or b"").decode("utf-8", "replace")
            print(f"  payload: {payload[:200]}")
    finally:
        consumer.close()
    if seen == 0:
        print(f"no records on {args.topic}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
