"""The typed settings model: every config key of photoscore declared once, with its type.

The defaults are not here: they live in one place, `conf/photoscore.yaml`, which is the first source
`jobs.config.load_settings` reads (then `PHOTOSCORE_*` env, the ecosystem's own variables, `--set`).
This module is the ground layer's view of the config: no I/O, so an engine worker (a Spark executor,
a Flink Python worker) rebuilds the same object from its JSON with `Settings.model_validate_json`.

Every section refuses unknown keys (`extra="forbid"`) and is frozen: components receive a section
(`settings.kafka`, `settings.features`) and can rely on it not changing under them.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Port = Annotated[int, Field(ge=0, le=65535)]
# A consumer's fetch wait in ms, or "auto": the broker kind's own (jobs.broker.fetch_wait_ms).
FetchWait = Union[Literal["auto"], NonNegativeInt]
# A feature version (udfs.features.FEATURE_VERSIONS), or "newest": the newest this photoscore computes.
FeatureVersion = Union[Literal["newest"], PositiveInt]


def _engine_value(value: object) -> object:
    """Engines take option values as strings: YAML's `true` and `2` become "true" and "2"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


EngineOptions = dict[str, Annotated[str, BeforeValidator(_engine_value)]]


class Section(BaseModel):
    """A config section: unknown keys are refused, values are validated, nothing changes later."""

    model_config = ConfigDict(extra="forbid", frozen=True)


S3_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def photo_root(location: str) -> str:
    """A place photos may be read from: a local directory or file (a path or `file:` URI; relative
    ones resolve against `home`), or an `s3://bucket/prefix/` prefix, made canonical (ending in
    "/", so `s3://b/photos` does not allow `s3://b/photos-private/`). ValueError otherwise."""
    parts = urlsplit(location)
    scheme = parts.scheme.lower() if "://" in location else ""
    if scheme in ("", "file"):
        return location
    if scheme != "s3":
        raise ValueError(f"{location!r}: photos are read from local directories and s3://bucket/prefix/ "
                         f"only, not {scheme}://")
    if not S3_BUCKET.fullmatch(parts.netloc) or parts.query or parts.fragment:
        raise ValueError(f"{location!r} is not an s3://bucket/prefix/ location")
    key = parts.path.strip("/")
    return f"s3://{parts.netloc}/{key}/" if key else f"s3://{parts.netloc}/"


PhotoRoot = Annotated[str, AfterValidator(photo_root)]


class S3Settings(Section):
    """Where `s3://` photos are read from and uploaded to. Credentials are never settings: botocore
    reads them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role)."""

    endpoint_url: str      # "": AWS_ENDPOINT_URL, else AWS itself
    region: str            # "": AWS_DEFAULT_REGION / the AWS config's
    embedded_bucket: str   # the local store's bucket (`photoscore s3 up`)
    embedded_port: Port    # its S3 port on 127.0.0.1; 0: pick a free one once and keep it


class StorageSettings(Section):
    # Where photos may be read from (udfs/photo_io.py, README "Trust model"), and how.
    photo_roots: list[PhotoRoot]
    read_timeout_s: Annotated[float, Field(gt=0)]
    read_attempts: PositiveInt
    read_backoff_s: Annotated[float, Field(ge=0)]
    read_backoff_max_s: Annotated[float, Field(ge=0)]
    tables: str
    s3: S3Settings


class KafkaTopics(Section):
    uploaded: str
    scores: str
    scores_shadow: str
    dlq: str


class KafkaSettings(Section):
    bootstrap: str
    topics: KafkaTopics
    partitions: PositiveInt
    retention_ms: Annotated[int, Field(ge=-1)]  # -1: Kafka's "keep forever"
    embedded_mode: Literal["durable", "ephemeral"]
    embedded_port: Port
    fetch_max_wait_ms: FetchWait
    max_message_bytes: PositiveInt  # an upload message over this is dead-lettered unparsed


class MlflowSettings(Section):
    tracking_uri: str
    artifact_root: str
    model_name: str
    alias: str


class SparkSettings(Section):
    master: str
    deploy_mode: Literal["", "client", "cluster"]
    log_level: Literal["ALL", "DEBUG", "ERROR", "FATAL", "INFO", "OFF", "TRACE", "WARN"]
    features_batch_rows: PositiveInt
    scoring_batch_rows: PositiveInt
    jvm_block_rows: PositiveInt
    c_in_jvm: bool
    conf: EngineOptions


class FlinkSettings(Section):
    parallelism: PositiveInt
    checkpoint_interval_ms: PositiveInt
    checkpoint_dir: str
    jobmanager: str
    python: str
    group_id: str
    fetch_max_wait_ms: FetchWait
    model_poll_interval_ms: PositiveInt
    cache_ttl_ms: PositiveInt
    python_bundle_size: PositiveInt
    python_bundle_time_ms: PositiveInt
    buffer_timeout_ms: NonNegativeInt
    python_worker_mode: Literal["process", "loopback"]
    gil_switch_interval_ms: Annotated[float, Field(gt=0)]
    jvm_args: str
    ship_connector_jars: bool
    conf: EngineOptions


class FeaturesSettings(Section):
    version: FeatureVersion
    max_pixels: PositiveInt
    max_side: PositiveInt
    min_side: PositiveInt
    max_file_bytes: PositiveInt

    def feature_version(self) -> int:
        """The feature version `version` names (PhotoscoreError when this photoscore does not
        compute it). Checked here, not at load: the check imports the extractor (OpenCV)."""
        from udfs.features import FEATURE_VERSION, feature_set

        return FEATURE_VERSION if self.version == "newest" else feature_set(self.version).version

    def limits(self):
        """These limits as the extractor's `DecodeLimits`."""
        from udfs.decode import DecodeLimits  # OpenCV/Pillow load only where photos are decoded

        return DecodeLimits(max_pixels=self.max_pixels, max_side=self.max_side, min_side=self.min_side,
                            max_file_bytes=self.max_file_bytes)


Share = Annotated[float, Field(ge=0, le=1)]


class ScoringSettings(Section):
    format: str
    threads: PositiveInt
    models: list[str]      # registered models scored per photo from one feature pass; []: mlflow.model_name

    def model_names(self, mlflow: MlflowSettings) -> list[str]:
        """The registered models to score, in order (the configured list, else the default model)."""
        return list(dict.fromkeys(self.models)) or [mlflow.model_name]


class RolloutSettings(Section):
    """Thresholds of `photoscore compare` and of the stream's canary guardrail (udfs/comparison.py)."""

    decision_threshold: Share        # a score at or above it is a "low quality" decision
    min_pairs: PositiveInt           # fewer champion/challenger pairs than this: not enough evidence
    max_mean_abs_delta: Share
    min_rank_correlation: Annotated[float, Field(ge=-1, le=1)]
    max_flip_share: Share            # pairs whose decision differs
    max_psi: Annotated[float, Field(ge=0)]   # score distributions' population stability index
    max_error_rate: Share            # challenger score failures per content it tried
    max_latency_p99_ms: Annotated[float, Field(gt=0)]  # the stream's challenger p99 (compare --stream)
    guardrail_window: PositiveInt    # the stream's sliding window of canary pairs per model


class AirflowSettings(Section):
    port: Port
    parallelism: NonNegativeInt
    spark_conn_id: str
    backfill_schedule: str
    max_quarantine_share: Share
    lifecycle_features: str
    lifecycle_labels: str
    lifecycle_target: str
    lifecycle_model_types: list[Literal["xgboost", "lightgbm", "catboost", "logreg"]]
    promotion_margin: Annotated[float, Field(ge=0)]
    stream_watch_schedule: str
    max_checkpoint_age_s: PositiveInt
    max_consumer_lag: NonNegativeInt
    task_retries: NonNegativeInt
    task_timeout_s: PositiveInt


class MonitorSettings(Section):
    """The drift monitor (`photoscore monitor`, the photoscore_monitor DAG), the reference profile
    written into each bundle, the stream's metrics and the operator views (`photoscore ui`)."""

    window: str                      # default --since of `photoscore monitor`: a span ago (1d) or ISO time
    out: str                         # where reports go: <out>/<model>/v<version>/<time>/{drift.json,report.html}
    min_rows: PositiveInt            # fewer current rows: no drift verdict (too little evidence)
    psi_warn: Annotated[float, Field(ge=0)]    # the usual 0.1 / 0.25 bands of the population stability index
    psi_alarm: Annotated[float, Field(ge=0)]
    ks_alpha: Annotated[float, Field(gt=0, lt=1)]   # a drift alarm also needs the KS test's p below this
    max_missing_increase: Share      # missing/non-finite share of a feature or score above the reference's + this
    max_quarantine_increase: Share   # quarantine share of inputs above the reference's + this
    profile_rows: PositiveInt        # training rows sampled into a bundle's reference profile
    alarms_before_retrain: PositiveInt   # consecutive alarmed monitor runs before the retrain request
    schedule: str                    # photoscore_monitor's schedule ("" = only after backfills)
    metrics: bool                    # the stream job exposes Prometheus metrics
    metrics_port: Port               # ... on 127.0.0.1:<port>; 0: pick a free port when the job starts
    stream_features: list[str]       # features whose rolling mean the stream exports (with the reference band)
    stream_window: PositiveInt       # uploads in the stream's rolling means
    band_z: Annotated[float, Field(gt=0)]   # the reference band: mean +- z * std / sqrt(window)
    ui_mlflow_port: Port             # `photoscore ui`: the MLflow UI on 127.0.0.1; 0: pick once and keep


def _absolute(path: Path) -> Path:
    return path.expanduser().resolve()


class Settings(BaseSettings):
    """The whole effective configuration (see conf/photoscore.yaml for what each key means)."""

    # Constructing it reads no environment: `jobs.config.load_settings` layers the sources, so a
    # worker rebuilding it from JSON gets exactly what the driver resolved.
    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    home: Annotated[Path, AfterValidator(_absolute)]
    storage: StorageSettings
    kafka: KafkaSettings
    mlflow: MlflowSettings
    spark: SparkSettings
    flink: FlinkSettings
    features: FeaturesSettings
    scoring: ScoringSettings
    rollout: RolloutSettings
    airflow: AirflowSettings
    monitor: MonitorSettings

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return (init_settings,)

    def resolve(self, location: str) -> str:
        """A location from config: URIs and absolute paths pass through, relative paths resolve
        against `home`."""
        if "://" in location or Path(location).is_absolute():
            return location
        return str(self.home / location)

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI: the configured one, else the embedded SQLite store under home."""
        return self.mlflow.tracking_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    def updated(self, **sections) -> "Settings":
        """A copy with some keys changed, validated again: `updated(kafka={"bootstrap": "h:9092"})`.

        Each keyword is a top-level key; a dict value updates that section's keys."""
        data = self.model_dump()
        for key, value in sections.items():
            data[key] = {**data[key], **value} if isinstance(value, dict) else value
        return type(self).model_validate(data)
