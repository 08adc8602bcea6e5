"""Layered config: defaults, then PHOTOSCORE_* env, then the ecosystem's variables, then CLI."""
from __future__ import annotations

import pytest

from jobs.config import ConfigError, decode_limits, load_config


def test_defaults_load_and_relative_paths_resolve_against_home(tmp_path):
    config = load_config(env={"PHOTOSCORE_HOME": str(tmp_path)})
    assert config.home == tmp_path
    assert config.path("storage.tables") == str(tmp_path / "tables")
    assert config.tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert config["kafka.topics.uploaded"] == "photos.uploaded"


def test_env_overrides_defaults_with_yaml_types_and_cli_overrides_env():
    env = {"PHOTOSCORE_KAFKA_BOOTSTRAP": "broker:9092", "PHOTOSCORE_KAFKA_PARTITIONS": "6",
           "PHOTOSCORE_SPARK_CONF__SPARK_EXECUTOR_MEMORY": "4g"}
    config = load_config(env=env)
    assert config["kafka.bootstrap"] == "broker:9092"
    assert config["kafka.partitions"] == 6
    assert config["spark.conf.spark_executor_memory"] == "4g"
    config = load_config(["kafka.partitions=3", "scoring.format=onnx"], env=env)
    assert config["kafka.partitions"] == 3 and config["scoring.format"] == "onnx"


def test_engine_options_under_conf_keep_their_dots():
    config = load_config(["spark.conf.spark.executor.memory=4g",
                          "flink.conf.execution.buffer-timeout.interval=5ms"], env={})
    assert config.data["spark"]["conf"]["spark.executor.memory"] == "4g"
    assert config["spark.conf.spark.executor.memory"] == "4g"
    assert config.data["flink"]["conf"] == {"execution.buffer-timeout.interval": "5ms"}
    assert config["spark.conf.spark.driver.host"] == "127.0.0.1"  # the defaults file's key still there


def test_ecosystem_tracking_uri_wins_over_photoscore_env_and_cli_wins_over_both():
    env = {"PHOTOSCORE_MLFLOW_TRACKING_URI": "sqlite:///a.db", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert load_config(env=env).tracking_uri == "http://mlflow:5000"
    assert load_config(["mlflow.tracking_uri=sqlite:///c.db"], env=env).tracking_uri == "sqlite:///c.db"


def test_bad_overrides_are_clear_errors():
    with pytest.raises(ConfigError, match="PHOTOSCORE_NOPE_X names no config section"):
        load_config(env={"PHOTOSCORE_NOPE_X": "1"})
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(["kafka.bootstrap"], env={})
    with pytest.raises(ConfigError, match="not set"):
        load_config(env={})["storage.nowhere"]


def test_decode_limits_come_from_the_features_section():
    limits = decode_limits(load_config(["features.max_pixels=1000"], env={}))
    assert limits.max_pixels == 1000 and limits.max_side == 30000
