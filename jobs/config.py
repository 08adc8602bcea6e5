"""Layered configuration: `conf/photoscore.yaml` defaults, then `PHOTOSCORE_*` environment
variables, then the ecosystem's own variables (`MLFLOW_TRACKING_URI`), then CLI `--set` flags.

One loader for every entrypoint (CLI, spark-submit jobs, the Flink job, Airflow tasks), so a local
run and a cluster run read the same keys.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

DEFAULTS_PATH = Path(__file__).resolve().parent.parent / "conf" / "photoscore.yaml"
ENV_PREFIX = "PHOTOSCORE_"


class ConfigError(ValueError):
    """A configuration value or override that cannot be applied."""


# Sections whose `conf` maps hold an engine's own dotted option names (spark.conf, flink.conf).
ENGINE_CONF = "conf"


class Config:
    """Nested configuration with dotted-key access: `cfg.get("kafka.bootstrap")`."""

    def __init__(self, data: Mapping[str, Any]):
        self.data = copy.deepcopy(dict(data))

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in _key_parts(dotted):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def __getitem__(self, dotted: str) -> Any:
        sentinel = object()
        value = self.get(dotted, sentinel)
        if value is sentinel:
            raise ConfigError(f"config key {dotted!r} is not set (see {DEFAULTS_PATH})")
        return value

    @property
    def home(self) -> Path:
        """Where the embedded default keeps its state (MLflow store, tables, broker data, logs)."""
        return Path(self.data["home"]).expanduser().resolve()

    def path(self, dotted: str) -> str:
        """A location from config: URIs pass through, relative paths resolve against `home`."""
        value = str(self[dotted])
        if "://" in value or os.path.isabs(value):
            return value
        return str(self.home / value)

    @property
    def tracking_uri(self) -> str:
        uri = self.get("mlflow.tracking_uri") or ""
        if uri:
            return uri
        return f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"


def _key_parts(dotted: str) -> list[str]:
    """`kafka.topics.scores` -> 3 levels; `spark.conf.spark.executor.memory` -> 3 levels too: an
    engine's own option name under `conf` is one key, dots and all."""
    parts = dotted.split(".")
    if len(parts) > 2 and parts[1] == ENGINE_CONF:
        return [parts[0], ENGINE_CONF, ".".join(parts[2:])]
    return parts


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = _key_parts(dotted)
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _parse_scalar(text: str) -> Any:
    # YAML scalars so env and CLI values get the same types as the defaults file ("2" -> 2).
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def _env_key(name: str) -> str | None:
    """`PHOTOSCORE_KAFKA_BOOTSTRAP` -> `kafka.bootstrap`; `PHOTOSCORE_SPARK_CONF__X` -> `spark.conf.x`."""
    if not name.startswith(ENV_PREFIX):
        return None
    rest = name[len(ENV_PREFIX):].lower()
    if rest == "home":
        return "home"
    section, sep, key = rest.partition("_")
    if not sep or not key:
        return None
    return ".".join([section, *key.split("__")])


def load_config(
    overrides: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    defaults_path: Path = DEFAULTS_PATH,
) -> Config:
    """Build the effective config. `overrides` are CLI `section.key=value` strings (applied last)."""
    env = os.environ if env is None else env
    with open(defaults_path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    for name, value in sorted(env.items()):
        key = _env_key(name)
        if key is None:
            continue
        if key != "home" and key.split(".")[0] not in data:
            raise ConfigError(
                f"environment variable {name} names no config section; sections are "
                f"{', '.join(sorted(k for k, v in data.items() if isinstance(v, dict)))}"
            )
        _set_dotted(data, key, _parse_scalar(value))
    if env.get("MLFLOW_TRACKING_URI"):
        data.setdefault("mlflow", {})["tracking_uri"] = env["MLFLOW_TRACKING_URI"]
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        _set_dotted(data, key.strip(), _parse_scalar(value))
    return Config(data)


def decode_limits(config: Config):
    """The `features` section as the extractor's DecodeLimits."""
    from udfs.decode import DecodeLimits

    return DecodeLimits(
        max_pixels=int(config["features.max_pixels"]),
        max_side=int(config["features.max_side"]),
        min_side=int(config["features.min_side"]),
        max_file_bytes=int(config["features.max_file_bytes"]),
    )
