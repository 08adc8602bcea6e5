"""The PyFlink streaming job: photos.uploaded -> features -> scores by every model, each by its
rollout plan -> photos.scores (served), photos.scores.shadow (a rollout's shadow scores and
failures), failures -> photos.dlq (runs in `.venv-flink`).

    Kafka(photos.uploaded) -> Row(claimed content_sha256 or "", raw bytes + topic/partition/offset)
      -> claimed: keyed by the claim in the JVM
         unclaimed: parse + validate, read the bytes, hash them (udfs.stream_scoring), keyed by the hash
      -> keyed by content_sha256 -> process: parse, read, hash (a claim is verified here); cached
         features/scores, else decode + features (udfs.features, as batch) once per feature version,
         then every registered model of `scoring.models` scores it (udfs.scoring, as batch) with the
         versions its rollout plan assigns the content (udfs.rollout); ValueState with TTL remembers
         each content's features per feature version and its score per model identity
      -> photos.scores / photos.scores.shadow / photos.dlq (KafkaSink, at-least-once, flushed on
         checkpoint)

A claimed photo crosses JVM <-> Python once; `photoscore upload` claims every photo's hash.
Every message ends as a score or a DLQ record; the job never fails because of a message. It fails
(and Flink restarts it from the checkpoint) when a photo's store is unreachable: that photo is read
again, never dead-lettered for the outage.
Checkpoints are retained on cancellation, so `photoscore stream start` resumes from the newest one
(`--restore`); records after it are replayed and carry the same score identity (content_sha256,
model_name, model_version).

Run locally (mini-cluster):  .venv-flink/bin/python jobs/stream_score.py --settings-json FILE
On a session cluster:        flink run -m HOST:PORT -py jobs/stream_score.py --settings-json FILE
(`photoscore stream start` writes the settings file, the typed settings with every local value
resolved, and picks one of the two.)
"""
from __future__ import annotations

import argparse
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


def flink_configuration(settings, restore: str | None):
    """The job's Flink Configuration from the photoscore settings (the `flink` section)."""
    from pyflink.common import Configuration

    conf = Configuration()
    # The connector jars sit in PyFlink's lib/ (on the JVM's classpath) in this environment; shipping
    # them again in pipeline.jars would load Kafka classes twice (a LinkageError). A cluster whose
    # lib/ lacks them gets them shipped (flink.ship_connector_jars).
    flink = settings.flink
    jars = connector_jars() if flink.ship_connector_jars else []
    jars.append(metadata_deserializer_jar(settings.home / "flink" / "lib").as_uri())
    conf.set_string("pipeline.jars", ";".join(jars))
    conf.set_string("pipeline.name", "photoscore-stream")
    # The Python worker must be this environment's interpreter, not `python` from PATH.
    conf.set_string("python.executable", flink.python)
    conf.set_string("python.client.executable", flink.python)
    # Small bundles: Python operators otherwise hold elements up to 1 s before flushing.
    conf.set_string("python.fn-execution.bundle.size", str(flink.python_bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(flink.python_bundle_time_ms))
    # Records between tasks wait in network buffers until full or this timeout: Flink's 100 ms
    # default was most of the end-to-end latency (two hops).
    conf.set_string("execution.buffer-timeout.interval", f"{flink.buffer_timeout_ms}ms")
    conf.set_string("parallelism.default", str(flink.parallelism))
    conf.set_string("execution.checkpointing.interval", f"{flink.checkpoint_interval_ms}ms")
    conf.set_string("execution.checkpointing.mode", "AT_LEAST_ONCE")
    conf.set_string("execution.checkpointing.dir", flink.checkpoint_dir)
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    conf.set_string("execution.checkpointing.num-retained", "2")
    conf.set_string("state.backend.type", "hashmap")
    # The job must outlive broker restarts: keep restarting (the source reconnects) rather than fail.
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", "1000000")
    conf.set_string("restart-strategy.fixed-delay.delay", "2 s")
    # Python metrics cost a little per bundle; off with the reporter (udfs/stream_metrics.py).
    conf.set_string("python.metric.enabled", str(settings.monitor.metrics).lower())
    if settings.monitor.metrics:
        conf.set_string("metrics.reporter.prom.factory.class", REPORTER_FACTORY)
        conf.set_string("metrics.reporter.prom.host", "127.0.0.1")
        conf.set_string("metrics.reporter.prom.port", str(settings.monitor.metrics_port))
        # Label values as they are ("0.005", "+Inf", "mean_luma"): the default filter turns "." and
        # "+" into "_", and `le` must stay a number for histogram_quantile. The page escapes them.
        conf.set_string("metrics.reporter.prom.filterLabelValueCharacters", "false")
    if restore:
        conf.set_string("execution.state-recovery.path", restore)
    # flink.conf: any Flink option, last so an operator can override every default above.
    for key, value in flink.conf.items():
        conf.set_string(key, value)
    return conf


# The DataStream KafkaSource's Python API only offers value-only deserializers, and the DLQ needs
# each record's topic/partition/offset. This small deserializer (compiled once with the JDK's javac
# against PyFlink's jars, shipped with pipeline.jars) emits Row(claim, line): `line` is
# "topic\tpartition\toffset\t+b64" ("-" for a null value), so any bytes, valid JSON or not, reach
# Python intact; `claim` is the message's content_sha256 when it carries a well-formed one, else "".
# The claim lets the JVM key a photo by its content with no Python operator before the key-by (the
# scoring operator verifies it); Claimed / Unclaimed split the stream in the JVM.
# Source: jobs/java/RecordWithMetadata.java.
DESERIALIZER_CLASS = "photoscore.flink.RecordWithMetadata"


def metadata_deserializer_jar(cache_dir: Path) -> Path:
    """jobs/java/RecordWithMetadata.java compiled against PyFlink's jars into a jar under `cache_dir`
    (once per source version: udfs/toolchain.py)."""
    import pyflink

    from udfs.toolchain import java_jar, source_text

    return java_jar({"photoscore/flink/RecordWithMetadata.java": source_text("jobs", "java/RecordWithMetadata.java")},
                    name="photoscore-kafka-metadata", what="the Kafka metadata deserializer", cache_dir=cache_dir,
                    classpath=f"{Path(pyflink.__file__).parent / 'lib'}/*", release="11", javac_flags=("-nowarn",))


# Flink's Prometheus reporter binds every interface; this one (jobs/java/LoopbackPrometheusReporterFactory.java,
# compiled like the deserializer) serves the same metrics on 127.0.0.1 only. The reporter is created by
# the cluster, not the job: it must be on the JVM's own classpath, not in pipeline.jars.
REPORTER_FACTORY = "photoscore.flink.LoopbackPrometheusReporterFactory"
PROMETHEUS_PLUGIN = "plugins/metrics-prometheus"


def metrics_reporter_classpath(cache_dir: Path) -> list[Path]:
    """The jars the local cluster's JVM needs for the Prometheus reporter: Flink's (shipped in the
    apache-flink wheel's plugins/) and the 127.0.0.1 reporter compiled against it under `cache_dir`."""
    import pyflink

    from udfs.toolchain import java_jar, source_path, source_text

    home = Path(pyflink.__file__).parent
    prometheus = sorted((home / PROMETHEUS_PLUGIN).glob("flink-metrics-prometheus-*.jar"))
    if not prometheus:
        raise SystemExit(f"stream_score: no flink-metrics-prometheus jar under {home / PROMETHEUS_PLUGIN}; "
                         "install the flink extra, or set monitor.metrics=false")
    reporter = java_jar(
        {"photoscore/flink/LoopbackPrometheusReporterFactory.java":
         source_text("jobs", "java/LoopbackPrometheusReporterFactory.java")},
        name="photoscore-prometheus-reporter", what="the 127.0.0.1 Prometheus reporter", cache_dir=cache_dir,
        classpath=f"{home / 'lib'}/*:{prometheus[-1]}", release="11", javac_flags=("-nowarn",),
        resources={"META-INF/services/org.apache.flink.metrics.reporter.MetricReporterFactory":
                   source_path("jobs", "java/MetricReporterFactory.services")})
    return [prometheus[-1], reporter]


def split_record(line: str) -> tuple[bytes | None, str, int, int]:
    """The deserializer's "topic\tpartition\toffset\t+b64" line -> (value, topic, partition, offset)."""
    import base64

    topic, partition, offset, value = line.split("\t", 3)
    raw = None if value == "-" else base64.b64decode(value[1:])
    return raw, topic, int(partition), int(offset)


def kafka_source(settings):
    """KafkaSource(photos.uploaded) emitting records with their metadata."""
    from pyflink.datastream.connectors.kafka import KafkaSource
    from pyflink.java_gateway import get_gateway

    builder = (KafkaSource.builder()
               .set_bootstrap_servers(settings.kafka.bootstrap)
               .set_topics(settings.kafka.topics.uploaded)
               .set_group_id(settings.flink.group_id)
               # Per broker kind (jobs.broker.fetch_wait_ms): Tansu holds an empty fetch for the whole
               # wait, and its s3 engine answers empty when the wait is shorter than its partition LIST.
               .set_property("fetch.max.wait.ms", str(settings.flink.fetch_max_wait_ms))
               .set_property("partition.discovery.interval.ms", "10000")
               .set_property("commit.offsets.on.checkpoint", "true"))
    jvm = get_gateway().jvm
    # Resume from the group's committed offsets (committed on checkpoints); a new group starts at
    # the earliest record, never at "latest" (which Tansu answers wrongly). Built with the Java
    # API: PyFlink 2.3's wrapper passes an enum the 4.0 connector no longer takes.
    reset = jvm.org.apache.kafka.clients.consumer.OffsetResetStrategy.EARLIEST
    builder._j_builder.setStartingOffsets(
        jvm.org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer.committedOffsets(reset))
    builder._j_builder.setDeserializer(java_instance(DESERIALIZER_CLASS))
    return builder.build()


def java_instance(class_name: str):
    """A new instance of a class from pipeline.jars (loaded by the job's user class loader)."""
    from pyflink.java_gateway import get_gateway

    loader = get_gateway().jvm.Thread.currentThread().getContextClassLoader()
    return loader.loadClass(class_name).newInstance()


def kafka_sink(bootstrap: str, topic: str):
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    return (KafkaSink.builder()
            .set_bootstrap_servers(bootstrap)
            .set_record_serializer(KafkaRecordSerializationSchema.builder()
                                   .set_topic(topic)
                                   .set_value_serialization_schema(SimpleStringSchema())
                                   .build())
            .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
            .set_property("linger.ms", "0")
            .set_property("acks", "all")
            .build())


def build(env, settings) -> None:
    """Wire the operators (the functions they call live in udfs/).

    A photo whose message claims its content_sha256 is keyed by that claim in the JVM and crosses
    into Python once: the keyed operator reads, hashes (verifying the claim), decodes and scores it.
    A message without a claim first goes through `parse-read-hash`, which keys it by the hash of
    the bytes it read; both streams meet in the same keyed state, so a content is cached once
    however it arrives. Each failure and each shadow score leaves through a side output, so routing
    to the sinks happens in the JVM, with no Python filter/map operators (each would be one more JVM <-> Python
    hop per record).
    """
    from pyflink.common import Row, Types
    from pyflink.common.time import Time
    from pyflink.common.watermark_strategy import WatermarkStrategy
    from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction, RuntimeContext
    from pyflink.datastream.data_stream import DataStream, KeyedStream
    from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor
    from pyflink.java_gateway import get_gateway

    # The operators' closures carry the settings as JSON (workers rebuild the typed object).
    settings_json = settings.model_dump_json()
    dlq_tag = OutputTag("dlq", Types.STRING())
    shadow_tag = OutputTag("shadow", Types.STRING())
    keyed_line = Types.ROW([Types.STRING(), Types.STRING()])  # (content_sha256, metadata line)

    def worker_settings():
        from udfs.settings import Settings
        return Settings.model_validate_json(settings_json)

    def prepare_line(line: str, limits, intake):
        """(PreparedPhoto | QuarantineRecord, uploaded_at_ms) of one metadata line."""
        from udfs.errors import TransientReadError
        from udfs.messages import source_ref
        from udfs.quarantine import QuarantineRecord, now_ms
        from udfs.stream_scoring import prepare

        raw, topic, partition, offset = split_record(line)
        ref = source_ref(topic, partition, offset)
        try:
            return prepare(raw, ref, limits, intake)
        except TransientReadError:
            # The photo's store is unreachable (after the reader's retries): not the message's
            # fault. The task fails, Flink restarts the job from its checkpoint and reads it again.
            raise
        except Exception as exc:  # noqa: BLE001 - a message never kills the job
            return QuarantineRecord(ref, None, "parse", "malformed_message",
                                    f"{type(exc).__name__}: {exc}"[:500], now_ms()), None

    def dead_letter(metrics, record, uploaded_at_ms):
        """The DLQ side-output element of `record`, counted in `metrics` (udfs.stream_metrics; None: off)."""
        from udfs.messages import encode_dlq

        if metrics is not None:
            metrics.dead_lettered(record.stage, record.reason_code)
        return dlq_tag, encode_dlq(record, uploaded_at_ms)

    class HashContent(ProcessFunction):
        """Row("", line) of a message without a claim -> Row(content_sha256, line) | DLQ JSON."""

        def open(self, ctx: RuntimeContext):
            from udfs.stream_metrics import stream_metrics
            from udfs.stream_scoring import upload_intake

            settings = worker_settings()
            self.limits, self.intake = settings.features.limits(), upload_intake(settings)
            self.metrics = stream_metrics(ctx.get_metrics_group(), settings.monitor)

        def process_element(self, row, ctx):
            from udfs.quarantine import QuarantineRecord

            prepared, uploaded = prepare_line(row[1], self.limits, self.intake)
            if isinstance(prepared, QuarantineRecord):
                yield dead_letter(self.metrics, prepared, uploaded)
            else:
                yield Row(prepared.content_sha256, row[1])

    class Score(KeyedProcessFunction):
        """Keyed by content_sha256: cached features/scores, else decode + features + scores by every
        model's assigned versions. Served score JSON on the main output, shadow JSON and DLQ JSON on
        side outputs; champion/challenger pairs go to each model's canary guardrail."""

        def open(self, ctx: RuntimeContext):
            from udfs.stream_metrics import stream_metrics
            from udfs.stream_models import registry_holders
            from udfs.stream_scoring import upload_intake

            settings = worker_settings()
            # The worker's gRPC threads wake constantly; feature extraction releases the GIL in
            # every OpenCV/Pillow call and, with Python's 5 ms switch interval, can wait that long
            # to get it back each time.
            sys.setswitchinterval(settings.flink.gil_switch_interval_ms / 1000.0)
            self.limits, self.intake = settings.features.limits(), upload_intake(settings)
            # ReturnExpiredIfNotCleanedUp keeps PyFlink's state cache: with NeverReturnExpired every
            # value()/update() is a synchronous round trip to the JVM. An expired entry read before
            # its cleanup is still right: features are a function of the content, and a cached
            # score is used only for the same model identity.
            ttl = (StateTtlConfig.new_builder(Time.milliseconds(settings.flink.cache_ttl_ms))
                   .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
                   .set_state_visibility(StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp)
                   .build())
            # The content's features per feature version and scores per model identity
            # (udfs.stream_scoring.ContentCache). Not named "content" or "content-by-version", the
            # states of earlier layouts: a checkpoint of theirs restores into this job without its
            # values being read as this state's.
            desc = ValueStateDescriptor("content-by-model", Types.PICKLED_BYTE_ARRAY())
            desc.enable_time_to_live(ttl)
            self.state = ctx.get_state(desc)
            self.holders = registry_holders(settings)
            self.by_name = {h.name: h for h in self.holders}
            self.metrics = stream_metrics(ctx.get_metrics_group(), settings.monitor)
            for holder in self.holders:
                holder.refresh()  # first load in open(): the first record is scored, not DLQ'd
                holder.start()

        def close(self):
            for holder in self.holders:
                holder.stop()

        def process_element(self, line, ctx):
            from udfs.quarantine import QuarantineRecord, now_ms
            from udfs.stream_scoring import DLQ, SHADOW, process_keyed

            prepared, uploaded = prepare_line(line, self.limits, self.intake)
            if isinstance(prepared, QuarantineRecord):
                yield dead_letter(self.metrics, prepared, uploaded)
                return
            # One plan and its models per model for this element: each swap is atomic.
            servings = [holder.current() for holder in self.holders]
            try:
                outcome = process_keyed(prepared, ctx.get_current_key(), servings, self.state.value(), self.limits)
            except Exception as exc:  # noqa: BLE001 - a message never kills the job
                rec = QuarantineRecord(prepared.ref, prepared.photo_id, "score", "score_failed",
                                       f"{type(exc).__name__}: {exc}"[:500], now_ms())
                yield dead_letter(self.metrics, rec, prepared.uploaded_at_ms)
                return
            if self.metrics is not None:
                self.metrics.finished(outcome, prepared.uploaded_at_ms, servings, now_ms())
            if outcome.cache is not None:
                self.state.update(outcome.cache)
            for pair in outcome.pairs:
                self.by_name[pair.model_name].observe(pair)
            tags = {DLQ: dlq_tag, SHADOW: shadow_tag}
            for kind, payload in outcome.records:
                yield (tags[kind], payload) if kind in tags else payload

    # Explicit uids: a checkpoint stays restorable when the job's graph changes around them.
    records = (env.from_source(kafka_source(settings), WatermarkStrategy.no_watermarks(), "photos.uploaded")
               .uid("photos.uploaded"))
    claimed = DataStream(records._j_data_stream.filter(java_instance(DESERIALIZER_CLASS + "$Claimed"))
                         .name("content claimed").uid("content-claimed"))
    unclaimed = DataStream(records._j_data_stream.filter(java_instance(DESERIALIZER_CLASS + "$Unclaimed"))
                           .name("no content claim").uid("no-content-claim"))
    hashed = unclaimed.process(HashContent(), output_type=keyed_line).name("parse-read-hash").uid("parse-read-hash")
    # The key-by PyFlink does itself (Row(key, value) keyed on field 0), done on JVM rows.
    keyed = KeyedStream(claimed.union(hashed)._j_data_stream.keyBy(
        get_gateway().jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info()),
        Types.STRING(), claimed)
    scored = keyed.process(Score(), output_type=Types.STRING()).name("features-score").uid("features-score")
    topics = settings.kafka.topics
    scored.sink_to(kafka_sink(settings.kafka.bootstrap, topics.scores)).name("photos.scores").uid("photos.scores")
    (scored.get_side_output(shadow_tag).sink_to(kafka_sink(settings.kafka.bootstrap, topics.scores_shadow))
     .name("photos.scores.shadow").uid("photos.scores.shadow"))
    (hashed.get_side_output(dlq_tag).union(scored.get_side_output(dlq_tag))
     .sink_to(kafka_sink(settings.kafka.bootstrap, topics.dlq)).name("photos.dlq").uid("photos.dlq"))


def main(argv: list[str] | None = None) -> int:
    """Entry point: `--settings-json FILE` (written by `photoscore stream start`), `--restore PATH`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings-json", required=True, type=Path)
    parser.add_argument("--restore", default=None, help="checkpoint directory to restore from")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from udfs.settings import Settings

    settings = Settings.model_validate_json(args.settings_json.read_text())

    from pyflink.datastream import StreamExecutionEnvironment

    # On the mini-cluster PyFlink defaults to "loopback": every Python operator runs as a thread of
    # this client process, so all of them share one GIL (one core), whatever the parallelism.
    # "process" gives each task slot (one subtask of every Python operator) its own worker process.
    os.environ.setdefault("_python_worker_execution_mode", settings.flink.python_worker_mode)
    if settings.monitor.metrics:
        # PyFlink starts its JVM (the mini-cluster's) with HADOOP_CLASSPATH appended to the classpath,
        # at the first Java call below: the reporter must be there by then.
        jars = metrics_reporter_classpath(settings.home / "flink" / "lib")
        os.environ["HADOOP_CLASSPATH"] = os.pathsep.join(
            [*map(str, jars), *filter(None, [os.environ.get("HADOOP_CLASSPATH")])])

    env = StreamExecutionEnvironment.get_execution_environment(flink_configuration(settings, args.restore))
    build(env, settings)
    topics = settings.kafka.topics
    log.info("submitting photoscore-stream: %s -> %s / %s / %s (bootstrap %s, restore %s)", topics.uploaded,
             topics.scores, topics.scores_shadow, topics.dlq, settings.kafka.bootstrap, args.restore)
    env.execute("photoscore-stream")
    return 0


if __name__ == "__main__":
    sys.exit(main())
