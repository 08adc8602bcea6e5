"""The PyFlink streaming job: photos.uploaded -> features -> score -> photos.scores, failures ->
photos.dlq (runs in `.venv-flink`).

    Kafka(photos.uploaded, raw bytes + topic/partition/offset metadata)
      -> prepare: parse + validate the message, read the bytes, hash them       (udfs.stream_scoring)
      -> key by content_sha256 -> process: cached features/score, else decode +
         features (udfs.features, as batch) + score (udfs.scoring, as batch) with the current
         champion; ValueState with TTL remembers each content's features and last score
      -> photos.scores / photos.dlq (KafkaSink, at-least-once, flushed on checkpoint)

Every message ends as a score or a DLQ record; the job never fails because of a message.
Checkpoints are retained on cancellation, so `photoscore stream start` resumes from the newest one
(`--restore`); records after it are replayed and carry the same score identity (content_sha256,
model_name, model_version).

Run locally (mini-cluster):  .venv-flink/bin/python jobs/stream_score.py --config-json FILE
On a session cluster:        flink run -m HOST:PORT -py jobs/stream_score.py --config-json FILE
(`photoscore stream start` builds the config file and picks one of the two.)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("photoscore.stream")

PYFLINK_LIB = "pyflink/lib"
CONNECTOR_JARS = ("flink-connector-kafka.jar", "kafka-clients.jar")


def connector_jars() -> list[str]:
    """file:// URLs of the Kafka connector jars shipped next to PyFlink in this environment."""
    import pyflink

    lib = Path(pyflink.__file__).parent / "lib"
    jars = [lib / name for name in CONNECTOR_JARS]
    missing = [str(j) for j in jars if not j.is_file()]
    if missing:
        raise SystemExit(f"stream_score: Kafka connector jars missing: {missing}; install the flink extra")
    return [j.as_uri() for j in jars]


def flink_configuration(cfg: dict, restore: str | None):
    """The job's Flink Configuration from the photoscore config (flink.* keys)."""
    from pyflink.common import Configuration

    conf = Configuration()
    # The connector jars sit in PyFlink's lib/ (on the JVM's classpath) in this environment; shipping
    # them again in pipeline.jars would load Kafka classes twice (a LinkageError). A cluster whose
    # lib/ lacks them gets them shipped (flink.ship_connector_jars).
    jars = connector_jars() if cfg.get("ship_connector_jars") else []
    jars.append(metadata_deserializer_jar(Path(cfg["photoscore"]["home"]) / "flink" / "lib").as_uri())
    conf.set_string("pipeline.jars", ";".join(jars))
    conf.set_string("pipeline.name", "photoscore-stream")
    # The Python worker must be this environment's interpreter, not `python` from PATH.
    conf.set_string("python.executable", cfg["python_executable"])
    conf.set_string("python.client.executable", cfg["python_executable"])
    # Small bundles: Python operators otherwise hold elements up to 1 s before flushing.
    conf.set_string("python.fn-execution.bundle.size", str(cfg["bundle_size"]))
    conf.set_string("python.fn-execution.bundle.time", str(cfg["bundle_time_ms"]))
    # Records between tasks wait in network buffers until full or this timeout: Flink's 100 ms
    # default was most of the end-to-end latency (two hops).
    conf.set_string("execution.buffer-timeout.interval", f"{cfg.get('buffer_timeout_ms', 2)}ms")
    conf.set_string("parallelism.default", str(cfg["parallelism"]))
    conf.set_string("execution.checkpointing.interval", f"{cfg['checkpoint_interval_ms']}ms")
    conf.set_string("execution.checkpointing.mode", "AT_LEAST_ONCE")
    conf.set_string("execution.checkpointing.dir", cfg["checkpoint_dir"])
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    conf.set_string("execution.checkpointing.num-retained", "2")
    conf.set_string("state.backend.type", "hashmap")
    # The job must outlive broker restarts: keep restarting (the source reconnects) rather than fail.
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", "1000000")
    conf.set_string("restart-strategy.fixed-delay.delay", "2 s")
    if restore:
        conf.set_string("execution.state-recovery.path", restore)
    # flink.conf: any Flink option, last so an operator can override every default above.
    for key, value in (cfg.get("flink_conf") or {}).items():
        conf.set_string(str(key), str(value))
    return conf


# The DataStream KafkaSource's Python API only offers value-only deserializers, and the DLQ needs
# each record's topic/partition/offset. This tiny deserializer (compiled once with the JDK's javac
# against the connector jars, shipped with pipeline.jars) emits "topic\tpartition\toffset\t+b64"
# ("-" for a null value), so any bytes, valid JSON or not, reach Python intact.
METADATA_DESERIALIZER = """
package photoscore.flink;

import java.util.Base64;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

public class RecordWithMetadata implements KafkaRecordDeserializationSchema<String> {
    private static final long serialVersionUID = 1L;

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<String> out) {
        byte[] value = record.value();
        out.collect(record.topic() + "\t" + record.partition() + "\t" + record.offset() + "\t"
                + (value == null ? "-" : "+" + Base64.getEncoder().encodeToString(value)));
    }

    @Override
    public TypeInformation<String> getProducedType() {
        return Types.STRING;
    }
}
"""
DESERIALIZER_CLASS = "photoscore.flink.RecordWithMetadata"


def metadata_deserializer_jar(cache_dir: Path) -> Path:
    """Compile METADATA_DESERIALIZER into a jar under `cache_dir` (once per source version)."""
    import hashlib
    import shutil
    import subprocess
    import tempfile

    import pyflink

    digest = hashlib.sha256(METADATA_DESERIALIZER.encode()).hexdigest()[:12]
    jar = cache_dir / f"photoscore-kafka-metadata-{digest}.jar"
    if jar.is_file():
        return jar
    javac, jar_tool = shutil.which("javac"), shutil.which("jar")
    if not javac or not jar_tool:
        raise SystemExit("stream_score: a JDK (javac, jar) is needed to build the Kafka metadata deserializer")
    cache_dir.mkdir(parents=True, exist_ok=True)
    lib = Path(pyflink.__file__).parent / "lib"
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        src = Path(tmp) / "src" / "photoscore" / "flink" / "RecordWithMetadata.java"
        src.parent.mkdir(parents=True)
        src.write_text(METADATA_DESERIALIZER)
        classes = Path(tmp) / "classes"
        subprocess.run([javac, "-nowarn", "--release", "11", "-cp", f"{lib}/*", "-d", str(classes), str(src)],
                       check=True, capture_output=True, text=True)
        staged = Path(tmp) / jar.name
        subprocess.run([jar_tool, "cf", str(staged), "-C", str(classes), "."], check=True, capture_output=True)
        staged.replace(jar)  # atomic: concurrent starts never see half a jar
    return jar


def split_record(line: str) -> tuple[bytes | None, str, int, int]:
    """The deserializer's "topic\tpartition\toffset\t+b64" line -> (value, topic, partition, offset)."""
    import base64

    topic, partition, offset, value = line.split("\t", 3)
    raw = None if value == "-" else base64.b64decode(value[1:])
    return raw, topic, int(partition), int(offset)


def kafka_source(cfg: dict):
    """KafkaSource(photos.uploaded) emitting records with their metadata."""
    from pyflink.datastream.connectors.kafka import KafkaSource
    from pyflink.java_gateway import get_gateway

    builder = (KafkaSource.builder()
               .set_bootstrap_servers(cfg["bootstrap"])
               .set_topics(cfg["topic_uploaded"])
               .set_group_id(cfg["group_id"])
               # Per broker kind (jobs.broker.fetch_wait_ms): Tansu holds an empty fetch for the whole
               # wait, and its s3 engine answers empty when the wait is shorter than its partition LIST.
               .set_property("fetch.max.wait.ms", str(cfg["fetch_max_wait_ms"]))
               .set_property("partition.discovery.interval.ms", "10000")
               .set_property("commit.offsets.on.checkpoint", "true"))
    jvm = get_gateway().jvm
    # Resume from the group's committed offsets (committed on checkpoints); a new group starts at
    # the earliest record, never at "latest" (which Tansu answers wrongly). Built with the Java
    # API: PyFlink 2.3's wrapper passes an enum the 4.0 connector no longer takes.
    reset = jvm.org.apache.kafka.clients.consumer.OffsetResetStrategy.EARLIEST
    builder._j_builder.setStartingOffsets(
        jvm.org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer.committedOffsets(reset))
    loader = jvm.Thread.currentThread().getContextClassLoader()
    deserializer = loader.loadClass(DESERIALIZER_CLASS).newInstance()
    builder._j_builder.setDeserializer(deserializer)
    return builder.build()


def kafka_sink(cfg: dict, topic: str):
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    return (KafkaSink.builder()
            .set_bootstrap_servers(cfg["bootstrap"])
            .set_record_serializer(KafkaRecordSerializationSchema.builder()
                                   .set_topic(topic)
                                   .set_value_serialization_schema(SimpleStringSchema())
                                   .build())
            .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
            .set_property("linger.ms", "0")
            .set_property("acks", "all")
            .build())


def build(env, cfg: dict) -> None:
    """Wire the operators (the functions they call live in udfs/).

    Two Python operators only (parse-read-hash, keyed features-score): each failure leaves through
    a side output, so routing to the two sinks happens in the JVM, with no Python filter/map
    operators (each would be one more JVM <-> Python hop per record).
    """
    from pyflink.common import Types
    from pyflink.common.time import Time
    from pyflink.common.watermark_strategy import WatermarkStrategy
    from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction, RuntimeContext
    from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor

    limits_cfg = cfg["limits"]
    dlq_tag = OutputTag("dlq", Types.STRING())

    def limits():
        from udfs.decode import DecodeLimits
        return DecodeLimits(**limits_cfg)

    class Prepare(ProcessFunction):
        """A metadata line -> PreparedPhoto (main output) | DLQ JSON (side output)."""

        def open(self, ctx: RuntimeContext):
            self.limits = limits()

        def process_element(self, line, ctx):
            from udfs.messages import encode_dlq, source_ref
            from udfs.quarantine import QuarantineRecord, now_ms
            from udfs.stream_scoring import prepare

            raw, topic, partition, offset = split_record(line)
            ref = source_ref(topic, partition, offset)
            try:
                prepared, uploaded = prepare(raw, ref, self.limits)
            except Exception as exc:  # noqa: BLE001 - a message never kills the job
                prepared, uploaded = QuarantineRecord(ref, None, "parse", "malformed_message",
                                                      f"{type(exc).__name__}: {exc}"[:500], now_ms()), None
            if isinstance(prepared, QuarantineRecord):
                yield dlq_tag, encode_dlq(prepared, uploaded)
            else:
                yield prepared

    class Score(KeyedProcessFunction):
        """Keyed by content_sha256: cached features/score, else decode + features + score.
        Score JSON on the main output, DLQ JSON on the side output."""

        def open(self, ctx: RuntimeContext):
            from jobs.config import Config
            from udfs.stream_scoring import registry_holder

            # The worker's gRPC threads wake constantly; feature extraction releases the GIL in
            # every OpenCV/Pillow call and, with Python's 5 ms switch interval, can wait that long
            # to get it back each time.
            sys.setswitchinterval(cfg["gil_switch_interval_ms"] / 1000.0)
            self.limits = limits()
            # ReturnExpiredIfNotCleanedUp keeps PyFlink's state cache: with NeverReturnExpired every
            # value()/update() is a synchronous round trip to the JVM. An expired entry read before its cleanup is still right: features are a
            # function of the content, and a cached score is used only for the same model identity.
            ttl = (StateTtlConfig.new_builder(Time.milliseconds(int(cfg["cache_ttl_ms"])))
                   .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
                   .set_state_visibility(StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp)
                   .build())
            desc = ValueStateDescriptor("content", Types.PICKLED_BYTE_ARRAY())
            desc.enable_time_to_live(ttl)
            self.state = ctx.get_state(desc)
            self.holder = registry_holder(Config(cfg["photoscore"]), cfg["export_format"],
                                          cfg["model_poll_interval_ms"] / 1000.0)
            self.holder.refresh()  # first load in open(): the first record is scored, not DLQ'd

        def process_element(self, photo, ctx):
            from udfs.messages import encode_dlq
            from udfs.quarantine import QuarantineRecord, now_ms
            from udfs.stream_scoring import DLQ, process_photo

            self.holder.maybe_refresh()
            model = self.holder.current()  # one version for this element: the swap is atomic
            try:
                outcome = process_photo(photo, model, self.state.value(), self.limits)
            except Exception as exc:  # noqa: BLE001 - a message never kills the job
                rec = QuarantineRecord(photo.ref, photo.photo_id, "score", "score_failed",
                                       f"{type(exc).__name__}: {exc}"[:500], now_ms())
                yield dlq_tag, encode_dlq(rec, photo.uploaded_at_ms)
                return
            if outcome.cache is not None:
                self.state.update(outcome.cache)
            for kind, payload in outcome.records:
                yield (dlq_tag, payload) if kind == DLQ else payload

    lines = env.from_source(kafka_source(cfg), WatermarkStrategy.no_watermarks(), "photos.uploaded")
    prepared = lines.process(Prepare(), output_type=Types.PICKLED_BYTE_ARRAY()).name("parse-read-hash")
    scored = (prepared.key_by(lambda photo: photo.content_sha256, key_type=Types.STRING())
              .process(Score(), output_type=Types.STRING()).name("features-score"))
    scored.sink_to(kafka_sink(cfg, cfg["topic_scores"])).name("photos.scores")
    (prepared.get_side_output(dlq_tag).union(scored.get_side_output(dlq_tag))
     .sink_to(kafka_sink(cfg, cfg["topic_dlq"])).name("photos.dlq"))


def main(argv: list[str] | None = None) -> int:
    """Entry point: `--config-json FILE` (written by `photoscore stream start`), `--restore PATH`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-json", required=True, type=Path)
    parser.add_argument("--restore", default=None, help="checkpoint directory to restore from")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = json.loads(args.config_json.read_text())

    from pyflink.datastream import StreamExecutionEnvironment

    # On the mini-cluster PyFlink defaults to "loopback": every Python operator runs as a thread of
    # this client process, so all of them share one GIL (one core), whatever the parallelism.
    # "process" gives each task slot (one subtask of every Python operator) its own worker process.
    os.environ.setdefault("_python_worker_execution_mode", cfg.get("python_worker_mode", "process"))

    env = StreamExecutionEnvironment.get_execution_environment(flink_configuration(cfg, args.restore))
    build(env, cfg)
    log.info("submitting photoscore-stream: %s -> %s / %s (bootstrap %s, restore %s)",
             cfg["topic_uploaded"], cfg["topic_scores"], cfg["topic_dlq"], cfg["bootstrap"], args.restore)
    env.execute("photoscore-stream")
    return 0


if __name__ == "__main__":
    sys.exit(main())
