"""`python -m jobs.configure_topics` (what configureTopics.sh runs): create or update every
topic of `kafka.topics` (photos.uploaded, photos.scores, photos.scores.shadow, photos.dlq) on the
configured broker, from config.

Exit codes: 0 done, 1 no broker / a Kafka error (message on stderr), 2 a config error, 4 some
setting could not be applied (the broker refused it; the lines say which).
"""
from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    """Configure the topics; print one line per topic."""
    from jobs.broker import bootstrap_servers
    from jobs.config import load_settings_or_exit
    from jobs.kafka_admin import NOT_UPDATED, configure_topics, topic_specs
    from udfs.errors import PhotoscoreError

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # client chatter is not the script's output
    if argv:
        print("usage: python -m jobs.configure_topics", file=sys.stderr)
        return 2
    settings = load_settings_or_exit("configureTopics")
    try:
        lines = configure_topics(bootstrap_servers(settings), topic_specs(settings.kafka))
        for line in lines:
            print(line)
    except PhotoscoreError as exc:
        print(f"configureTopics: {exc}", file=sys.stderr)
        return 1
    if any(NOT_UPDATED in line for line in lines):
        print("configureTopics: some settings could not be applied (see above)", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
