"""Kafka-protocol administration against any broker (the embedded Tansu or a real Kafka cluster):
the health probe (a Metadata request), waiting for a broker to answer, and the topic set-up."""
from __future__ import annotations

from pathlib import Path

from jobs.supervise import port_open, wait_until
from udfs.errors import PhotoscoreError
from udfs.settings import KafkaSettings

NOT_UPDATED = "NOT UPDATED"


def kafka_metadata(bootstrap: str, timeout_s: float = 5.0) -> list[str]:
    """Topic names from a real Kafka Metadata request; raises PhotoscoreError when nobody answers."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                                 client_id="photoscore-health")
    except (KafkaError, OSError, ValueError) as exc:
        raise PhotoscoreError(f"no Kafka broker answers at {bootstrap}: {exc}") from None
    try:
        return sorted(admin.list_topics())
    except (KafkaError, OSError) as exc:
        raise PhotoscoreError(f"the Kafka broker at {bootstrap} did not answer a metadata request: {exc}") from None
    finally:
        admin.close()


def wait_for_kafka(bootstrap: str, timeout_s: float = 30.0, pid: int | None = None,
                   log_path: Path | None = None) -> None:
    """Block until a metadata request succeeds; fail early (ProcessExited) when `pid` dies.

    Raises WaitTimeout after `timeout_s`; both errors point at `log_path`."""
    host, _, port = bootstrap.rpartition(":")

    def answers() -> bool:
        if not port_open(host, int(port)):
            return False
        try:
            kafka_metadata(bootstrap, timeout_s=3.0)
            return True
        except PhotoscoreError:
            return False

    wait_until(answers, timeout_s, 0.2, what=f"the broker at {bootstrap} to answer", watch=pid,
               hint=f"see {log_path}" if log_path else "")


def topic_specs(kafka: KafkaSettings) -> dict[str, dict]:
    """{topic: {"partitions": n, "retention.ms": ms}} for every topic of the `kafka` section."""
    spec = {"partitions": kafka.partitions, "retention.ms": kafka.retention_ms}
    return {topic: dict(spec) for topic in kafka.topics.model_dump().values()}


def _topic_configs(admin, topic: str) -> dict[str, str]:
    """The topic's configs as reported by the broker ({} when it reports none, as Tansu does)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    # kafka-python 3 answers {"topic": {name: {config: value}}}; older versions a list of responses.
    if isinstance(result, dict):
        found = result.get("topic", {}).get(topic, {}) or {}
        return {k: (v.get("value") if isinstance(v, dict) else v) for k, v in found.items()}
    configs: dict[str, str] = {}
    for response in result:
        for resource in getattr(response, "resources", []):
            for entry in resource[4]:
                configs[entry[0]] = entry[1]
    return configs


def configure_topics(bootstrap: str, specs: dict[str, dict], timeout_s: float = 10.0) -> list[str]:
    """Create missing topics, add partitions and set `retention.ms` where they differ.

    Returns one line per topic saying what was done ("ok" when already right). Works against any
    Kafka-protocol broker; brokers that do not report topic configs (Tansu) get `retention.ms`
    re-applied, which is idempotent.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    kafka_metadata(bootstrap, timeout_s=timeout_s)  # clear error first when nobody answers
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                             client_id="photoscore-topics")
    lines = []
    try:
        existing = {t["name"]: t for t in admin.describe_topics() if not t.get("error_code")}
        for topic, spec in specs.items():
            want_parts, want_ret = int(spec["partitions"]), str(int(spec["retention.ms"]))
            if topic not in existing:
                try:
                    admin.create_topics([NewTopic(topic, want_parts, 1, topic_configs={"retention.ms": want_ret})])
                    lines.append(f"{topic}: created partitions={want_parts} retention.ms={want_ret}")
                    continue
                except TopicAlreadyExistsError:  # created concurrently: fall through to the checks
                    existing.update({t["name"]: t for t in admin.describe_topics([topic])})
            done = []
            have_parts = len(existing[topic]["partitions"])
            if have_parts < want_parts:
                try:
                    admin.create_partitions({topic: NewPartitions(want_parts)})
                    done.append(f"partitions {have_parts}->{want_parts}")
                except KafkaError as exc:  # Tansu 0.6 has no CreatePartitions
                    done.append(f"partitions {have_parts}, {want_parts} configured: {NOT_UPDATED} "
                                f"(the broker refused CreatePartitions: {exc}; recreate the topic to change it)")
            elif have_parts > want_parts:
                done.append(f"partitions {have_parts} > {want_parts} configured (Kafka cannot shrink; left as is)")
            have_ret = _topic_configs(admin, topic).get("retention.ms")
            if have_ret != want_ret:
                admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                    configs={"retention.ms": want_ret})])
                done.append(f"retention.ms {have_ret if have_ret is not None else '(not reported)'}->{want_ret}")
            lines.append(f"{topic}: {', '.join(done) if done else 'ok'}")
    except KafkaError as exc:
        raise PhotoscoreError(f"configuring topics on {bootstrap} failed: {exc}") from None
    finally:
        admin.close()
    return lines
