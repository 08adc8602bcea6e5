"""Layered configuration: `conf/photoscore.yaml` defaults, then `PHOTOSCORE_*` environment
variables, then the ecosystem's own variables (`MLFLOW_TRACKING_URI`), then CLI `--set` flags,
validated into one typed `udfs.settings.Settings`.

One loader for every entrypoint (CLI, spark-submit jobs, the Flink job, Airflow tasks), so a local
run and a cluster run read the same keys. Unknown keys and values of the wrong type are refused from
every source with the key, what was given, where it came from and what is allowed.

Environment names: `PHOTOSCORE_<SECTION>_<KEY>` with `__` for deeper levels
(`PHOTOSCORE_KAFKA_TOPICS__SCORES`), or fully nested (`PHOTOSCORE_KAFKA__BOOTSTRAP`). Under an
engine's pass-through map (`spark.conf`, `flink.conf`) an env name becomes the engine's dotted option:
`PHOTOSCORE_SPARK_CONF__SPARK_EXECUTOR_MEMORY` -> `spark.executor.memory` (an option with capitals,
such as `spark.executor.extraJavaOptions`, takes the JSON form `PHOTOSCORE_SPARK_CONF='{...}'` or
`--set`).

pydantic-settings reads the YAML file (`YamlConfigSettingsSource`); the environment and `--set`
are parsed here because photoscore's names (a section and a key joined by `_`, engine options
with dots) are not its `env_nested_delimiter` scheme, because its env source ignores unknown
`PHOTOSCORE_*` names where a typo must be refused, and because `photoscore config --sources` needs
to know which source gave each value.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import YamlConfigSettingsSource

from udfs.settings import Settings

DEFAULTS_PATH = Path(__file__).resolve().parent.parent / "conf" / "photoscore.yaml"
ENV_PREFIX = "PHOTOSCORE_"
# Sections whose `conf` maps hold an engine's own dotted option names (spark.conf, flink.conf).
ENGINE_CONF = "conf"
# The ecosystem's own variables, which win over PHOTOSCORE_* (DESIGN.md "Config keys").
ECOSYSTEM_ENV = {"MLFLOW_TRACKING_URI": ("mlflow", "tracking_uri"),
                 "AWS_ENDPOINT_URL": ("storage", "s3", "endpoint_url"),
                 "AWS_DEFAULT_REGION": ("storage", "s3", "region")}
# Names documented before the typed config, still honoured.
LEGACY_ENV = {"PHOTOSCORE_SCORER_THREADS": ("scoring", "threads")}
# PHOTOSCORE_* names that are not config keys: who acts, for the audit trail (models/rollouts.py).
NOT_CONFIG_ENV = frozenset({"PHOTOSCORE_ACTOR"})


class ConfigError(ValueError):
    """A configuration value or override that cannot be applied."""


Key = tuple[str, ...]


@dataclass
class Layers:
    """The sources' values by key, in the order they apply, and where each value came from."""

    data: dict = field(default_factory=dict)
    origins: dict[Key, str] = field(default_factory=dict)

    def put(self, key: Key, value: Any, origin: str) -> None:
        node = self.data
        for part in key[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[key[-1]] = value
        self.origins[key] = origin

    def _get(self, key: Key) -> Any:
        node: Any = self.data
        for part in key:
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def put_tree(self, tree: Mapping, origin: str, prefix: Key = ()) -> None:
        for name, value in tree.items():
            key = (*prefix, str(name))
            if isinstance(value, Mapping) and not _is_engine_conf(key):
                self.put_tree(value, origin, key)
            elif isinstance(value, Mapping):  # an engine map merges option by option
                if not self._get(key):
                    self.put(key, {}, origin)
                for option, option_value in value.items():
                    self.put((*key, str(option)), option_value, origin)
            else:
                self.put(key, value, origin)


def _is_engine_conf(key: Key) -> bool:
    return len(key) == 2 and key[1] == ENGINE_CONF


def _field_type(key: Key) -> Any:
    """The annotation of `key` in the model; raises KeyError naming the allowed keys."""
    model: Any = Settings
    for depth, part in enumerate(key):
        if _is_engine_conf(key[:depth]):
            return str
        where = ".".join(key[:depth]) or "the top level"
        if not _is_model(model):
            raise KeyError(f"{where} is a value, not a section")
        fields = model.model_fields
        if part not in fields:
            raise KeyError(f"{where} has no key {part!r}; its keys are {', '.join(fields)}")
        model = fields[part].annotation
    return model


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _parse_text(key: Key, text: str) -> Any:
    """A string from env or `--set` as the value for `key`: lists and maps are YAML/JSON, a section
    is a YAML map, scalars stay strings for the model to validate (so `flase` is not a bool)."""
    annotation = _field_type(key)
    if _is_model(annotation) or get_origin(annotation) in (list, dict) or _is_engine_conf(key):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{'.'.join(key)}: cannot parse {text!r} as YAML/JSON ({exc})") from None
    return text


def _key_from_dotted(dotted: str) -> Key:
    """`kafka.topics.scores` -> 3 levels; `spark.conf.spark.executor.memory` -> 3 levels too: an
    engine's own option name under `conf` is one key, dots and all."""
    parts = tuple(dotted.split("."))
    if len(parts) > 2 and parts[1] == ENGINE_CONF:
        return (parts[0], ENGINE_CONF, ".".join(parts[2:]))
    return parts


def _key_from_env(name: str) -> Key:
    """`PHOTOSCORE_KAFKA_TOPICS__SCORES` -> (kafka, topics, scores); see the module docstring."""
    rest = name[len(ENV_PREFIX):].lower()
    parts = rest.split("__")
    if parts[0] not in Settings.model_fields:
        section, _, key = parts[0].partition("_")
        parts = [section, key, *parts[1:]] if key else parts
    if len(parts) > 2 and _is_engine_conf(tuple(parts[:2])):
        return (parts[0], ENGINE_CONF, ".".join(parts[2:]).replace("_", "."))
    return tuple(parts)


def _check_key(key: Key, origin: str) -> None:
    try:
        _field_type(key)
    except KeyError as exc:
        raise ConfigError(f"unknown config key {'.'.join(key)} (from {origin}): {exc.args[0]}") from None


def _collect(overrides: Iterable[str], env: Mapping[str, str], defaults_path: Path) -> Layers:
    layers = Layers()
    defaults = YamlConfigSettingsSource(Settings, yaml_file=defaults_path)()
    layers.put_tree(defaults, "default")
    for key in list(layers.origins):
        _check_key(key, f"{defaults_path}")
    for name, value in sorted(env.items()):
        if name in LEGACY_ENV:
            layers.put(LEGACY_ENV[name], value, f"env {name}")
        elif name.startswith(ENV_PREFIX) and name not in NOT_CONFIG_ENV:
            key = _key_from_env(name)
            _check_key(key, f"env {name}")
            _put_text(layers, key, value, f"env {name}")
    for name, key in ECOSYSTEM_ENV.items():
        if env.get(name):
            layers.put(key, env[name], f"env {name}")
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep or not dotted.strip():
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        key = _key_from_dotted(dotted.strip())
        _check_key(key, f"--set {item}")
        _put_text(layers, key, value, f"--set {dotted.strip()}")
    return layers


def _put_text(layers: Layers, key: Key, text: str, origin: str) -> None:
    value = _parse_text(key, text)
    if isinstance(value, Mapping):
        layers.put_tree(value, origin, key)
    else:
        layers.put(key, value, origin)


def _origin_of(layers: Layers, loc: Key) -> str:
    for depth in range(len(loc), 0, -1):
        if loc[:depth] in layers.origins:
            return layers.origins[loc[:depth]]
    return "default"


def _model_loc(loc: tuple) -> Key:
    """An error location cut to the model's keys (a union adds its branches' names after them)."""
    key: Key = ()
    for part in loc:
        try:
            _field_type((*key, str(part)))
        except KeyError:
            break
        key = (*key, str(part))
    return key


def _explain(exc: ValidationError, layers: Layers) -> str:
    problems: dict[Key, tuple[Any, list[str]]] = {}
    for error in exc.errors():  # a union's branches each report: one line per key, "or" between
        given, messages = problems.setdefault(_model_loc(error["loc"]), (error.get("input"), []))
        messages.append(error["msg"])
    lines = [f"{'.'.join(loc)} = {given!r} (from {_origin_of(layers, loc)}): {' or '.join(msgs)}"
             for loc, (given, msgs) in problems.items()]
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings_with_sources(
    overrides: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    defaults_path: Path = DEFAULTS_PATH,
) -> tuple[Settings, dict[Key, str]]:
    """The effective settings and, for each key a source set, where it came from."""
    layers = _collect(overrides, os.environ if env is None else env, defaults_path)
    try:
        return Settings.model_validate(layers.data), layers.origins
    except ValidationError as exc:
        raise ConfigError(_explain(exc, layers)) from None


def load_settings_or_exit(prog: str, overrides: Iterable[str] = ()) -> Settings:
    """`load_settings` for a script's entry point: a config error is printed for `prog` and the
    process exits 2, as `photoscore` does."""
    try:
        return load_settings(overrides)
    except ConfigError as exc:
        print(f"{prog}: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def load_settings(
    overrides: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    defaults_path: Path = DEFAULTS_PATH,
) -> Settings:
    """Build the effective settings. `overrides` are CLI `section.key=value` strings (applied last)."""
    return load_settings_with_sources(overrides, env, defaults_path)[0]



def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def render_yaml(settings: Settings, origins: Mapping[Key, str] | None = None) -> str:
    """The effective settings as YAML; with `origins`, each value ends with `# <where it came from>`
    (default, env NAME, --set KEY)."""
    if origins is None:
        return yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
    lines: list[str] = []

    def walk(node: Mapping, key: Key) -> None:
        for name, value in node.items():
            here = (*key, name)
            pad = "  " * len(key)
            if isinstance(value, Mapping) and value:
                lines.append(f"{pad}{_scalar(name)}:")
                walk(value, here)
            else:
                origin = origins.get(here) or _origin_of(Layers(origins=dict(origins)), here)
                lines.append(f"{pad}{_scalar(name)}: {_scalar(value)}  # {origin}")

    walk(settings.model_dump(mode="json"), ())
    return "\n".join(lines) + "\n"
