"""Layered, typed config: YAML defaults, then PHOTOSCORE_* env, then the ecosystem's variables, then
CLI `--set`; unknown keys and wrong types refused from every source."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from jobs.cli import main as cli_main
from jobs.config import ConfigError, load_settings, load_settings_with_sources, render_yaml
from udfs.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def test_defaults_load_and_relative_paths_resolve_against_home(tmp_path):
    settings = load_settings(env={"PHOTOSCORE_HOME": str(tmp_path)})
    assert settings.home == tmp_path
    assert settings.resolve(settings.storage.tables) == str(tmp_path / "tables")
    assert settings.resolve("s3://bucket/tables") == "s3://bucket/tables"
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert settings.kafka.topics.uploaded == "photos.uploaded"
    assert settings.scoring.threads == 1 and settings.spark.c_in_jvm is True


def test_env_overrides_defaults_with_types_and_cli_overrides_env():
    env = {"PHOTOSCORE_KAFKA_BOOTSTRAP": "broker:9092", "PHOTOSCORE_KAFKA_PARTITIONS": "6",
           "PHOTOSCORE_KAFKA_TOPICS__SCORES": "scores.v2", "PHOTOSCORE_FLINK__PARALLELISM": "3"}
    settings = load_settings(env=env)
    assert settings.kafka.bootstrap == "broker:9092" and settings.kafka.partitions == 6
    assert settings.kafka.topics.scores == "scores.v2" and settings.flink.parallelism == 3
    settings = load_settings(["kafka.partitions=3", "scoring.format=onnx"], env=env)
    assert settings.kafka.partitions == 3 and settings.scoring.format == "onnx"


def test_readme_env_example_names_the_spark_option_with_its_dots():
    # Was `spark_executor_memory`, which Spark silently ignores.
    settings = load_settings(env={"PHOTOSCORE_SPARK_CONF__SPARK_EXECUTOR_MEMORY": "4g"})
    assert settings.spark.conf["spark.executor.memory"] == "4g"
    assert "spark_executor_memory" not in settings.spark.conf
    assert settings.spark.conf["spark.driver.host"] == "127.0.0.1"  # the defaults file's option stays


def test_engine_options_keep_their_dots_and_case_in_set_and_json_env():
    settings = load_settings(["spark.conf.spark.executor.memory=4g",
                              "flink.conf.execution.buffer-timeout.interval=5ms"],
                             env={"PHOTOSCORE_SPARK_CONF": '{"spark.executor.extraJavaOptions": "-Da=1"}'})
    assert settings.spark.conf["spark.executor.memory"] == "4g"
    assert settings.spark.conf["spark.executor.extraJavaOptions"] == "-Da=1"
    assert settings.flink.conf == {"execution.buffer-timeout.interval": "5ms"}
    assert load_settings(["flink.conf={taskmanager.numberOfTaskSlots: 4}"], env={}).flink.conf == {
        "taskmanager.numberOfTaskSlots": "4"}  # YAML's number becomes the engine's string


def test_ecosystem_tracking_uri_wins_over_photoscore_env_and_cli_wins_over_both():
    env = {"PHOTOSCORE_MLFLOW_TRACKING_URI": "sqlite:///a.db", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert load_settings(env=env).tracking_uri == "http://mlflow:5000"
    assert load_settings(["mlflow.tracking_uri=sqlite:///c.db"], env=env).tracking_uri == "sqlite:///c.db"


def test_scorer_threads_variable_documented_before_is_honoured():
    # Was: every command exited 2 ("PHOTOSCORE_SCORER_THREADS names no config section").
    assert load_settings(env={"PHOTOSCORE_SCORER_THREADS": "2"}).scoring.threads == 2
    assert load_settings(env={"PHOTOSCORE_SCORING_THREADS": "3"}).scoring.threads == 3


@pytest.mark.parametrize("kwargs, names", [
    # a typo of a key, from each source: refused with the key, where it came from and what exists
    ({"env": {"PHOTOSCORE_KAFKA_BOOTSTRAPP": "h:1"}}, ["kafka.bootstrapp", "PHOTOSCORE_KAFKA_BOOTSTRAPP", "bootstrap"]),
    ({"env": {"PHOTOSCORE_NOPE_X": "1"}}, ["nope.x", "PHOTOSCORE_NOPE_X", "kafka"]),
    ({"overrides": ["kafka.topic.scores=x"]}, ["kafka.topic.scores", "--set", "topics"]),
    ({"overrides": ["kafka.partitions.x=1"]}, ["kafka.partitions is a value"]),
])
def test_unknown_keys_are_refused_from_every_source(kwargs, names):
    with pytest.raises(ConfigError) as err:
        load_settings(**{"env": {}, **kwargs})
    for name in names:
        assert name in str(err.value)


@pytest.mark.parametrize("override, names", [
    ("spark.c_in_jvm=flase", ["spark.c_in_jvm", "'flase'", "--set spark.c_in_jvm", "boolean"]),  # was taken as true
    ("kafka.partitions=many", ["kafka.partitions", "'many'", "integer"]),
    ("kafka.partitions=0", ["kafka.partitions", "greater than 0"]),
    ("kafka.embedded_mode=fast", ["kafka.embedded_mode", "'durable' or 'ephemeral'"]),
    ("flink.fetch_max_wait_ms=soon", ["flink.fetch_max_wait_ms", "'auto'", "integer"]),
    ("storage.photo_roots=/data", ["storage.photo_roots", "list"]),
])
def test_wrong_types_are_refused_with_what_was_given_and_what_is_allowed(override, names):
    with pytest.raises(ConfigError) as err:
        load_settings([override], env={})
    for name in names:
        assert name in str(err.value)


def test_wrong_types_from_env_and_yaml_are_refused_too(tmp_path):
    with pytest.raises(ConfigError, match=r"flink.parallelism = 'two' \(from env PHOTOSCORE_FLINK_PARALLELISM\)"):
        load_settings(env={"PHOTOSCORE_FLINK_PARALLELISM": "two"})
    defaults = yaml.safe_load((REPO / "conf" / "photoscore.yaml").read_text())
    defaults["kafka"]["partitons"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(defaults))
    with pytest.raises(ConfigError, match=f"kafka.partitons.*{bad}"):
        load_settings(env={}, defaults_path=bad)


def test_malformed_set_is_a_clear_error():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_settings(["kafka.bootstrap"], env={})


def test_settings_are_typed_frozen_sections():
    settings = load_settings(env={})
    with pytest.raises(ValidationError):
        settings.kafka.partitions = 9  # components can rely on their section not changing
    changed = settings.updated(kafka={"bootstrap": "h:9092"})
    assert changed.kafka.bootstrap == "h:9092" and changed.kafka.topics == settings.kafka.topics
    assert settings.kafka.bootstrap == ""
    # An engine worker rebuilds exactly the driver's object from its JSON.
    assert Settings.model_validate_json(changed.model_dump_json()) == changed


def test_decode_limits_come_from_the_features_section():
    limits = load_settings(["features.max_pixels=1000"], env={}).features.limits()
    assert limits.max_pixels == 1000 and limits.max_side == 30000


def test_sources_name_where_each_value_came_from():
    env = {"PHOTOSCORE_KAFKA_PARTITIONS": "6", "MLFLOW_TRACKING_URI": "http://m:5000"}
    settings, origins = load_settings_with_sources(["flink.parallelism=4"], env=env)
    text = render_yaml(settings, origins)
    assert "  partitions: 6  # env PHOTOSCORE_KAFKA_PARTITIONS" in text
    assert "  tracking_uri: http://m:5000  # env MLFLOW_TRACKING_URI" in text
    assert "  parallelism: 4  # --set flink.parallelism" in text
    assert "  alias: champion  # default" in text
    assert yaml.safe_load(render_yaml(settings)) == settings.model_dump(mode="json")


def test_cli_config_prints_effective_yaml_and_refuses_bad_input_with_exit_2(capsys, monkeypatch):
    monkeypatch.setenv("PHOTOSCORE_KAFKA_PARTITIONS", "5")
    assert cli_main(["--set", "flink.parallelism=3", "config", "--sources"]) == 0
    out = capsys.readouterr().out
    assert "partitions: 5  # env PHOTOSCORE_KAFKA_PARTITIONS" in out and "parallelism: 3  # --set" in out
    assert cli_main(["--set", "spark.c_in_jvm=flase", "config"]) == 2
    assert "spark.c_in_jvm" in capsys.readouterr().err
    monkeypatch.setenv("PHOTOSCORE_KAFKA_BOOTSTRAPP", "h:1")
    assert cli_main(["config"]) == 2
    assert "PHOTOSCORE_KAFKA_BOOTSTRAPP" in capsys.readouterr().err


def test_every_scoring_command_takes_the_same_model_and_format_flags():
    from jobs.cli import build_parser

    parser = build_parser()
    for argv in (["score", "--features", "f", "--out", "o"], ["backfill", "scores"], ["stream", "start"]):
        args = parser.parse_args([*argv, "--model", "models:/m@a", "--format", "onnx"])
        assert (args.model, args.export_format) == ("models:/m@a", "onnx"), argv


def test_stream_start_takes_the_model_alias_from_the_flag():
    from jobs.cli import build_parser
    from jobs.model_args import with_model_arguments
    from udfs.errors import PhotoscoreError

    settings = load_settings(env={})
    args = build_parser().parse_args(["stream", "start", "--model", "models:/text@challenger", "--format", "onnx"])
    job = with_model_arguments(args, settings)
    assert (job.mlflow.model_name, job.mlflow.alias, job.scoring.format) == ("text", "challenger", "onnx")
    args = build_parser().parse_args(["stream", "start", "--model", "models:/text/3"])
    with pytest.raises(PhotoscoreError, match="follows an alias"):
        with_model_arguments(args, settings)


def test_one_default_for_the_stream_profile():
    # jobs/commands/stream.py fell back to bundle size 1 and parallelism 1 where the YAML says 25 and 2.
    defaults = yaml.safe_load((REPO / "conf" / "photoscore.yaml").read_text())["flink"]
    settings = load_settings(env={})
    assert settings.flink.python_bundle_size == defaults["python_bundle_size"] == 25
    assert settings.flink.parallelism == defaults["parallelism"] == 2
    literal_defaults = subprocess.run(
        ["grep", "-rnE", r"\.get\([\"'](kafka|mlflow|spark|flink|features|scoring|storage)\.", "jobs", "udfs", "models"],
        cwd=REPO, capture_output=True, text=True).stdout
    assert literal_defaults == ""  # no `config.get("section.key", literal)` left anywhere


@pytest.mark.integration
def test_readme_env_example_reaches_a_real_spark_session(tmp_path):
    """The env variable reaches SparkSession.conf as `spark.executor.memory` (not on a dict)."""
    probe = ("from jobs.config import load_settings\n"
             "from jobs.spark_session import get_session\n"
             "spark = get_session(load_settings().spark, 'conf-probe', master='local[1]')\n"
             "print('memory=' + spark.conf.get('spark.executor.memory'))\n"
             "print('typo=' + str(spark.conf.get('spark_executor_memory', None)))\n"
             "spark.stop()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSCORE_")}
    env.update(PHOTOSCORE_HOME=str(tmp_path), PHOTOSCORE_SPARK_CONF__SPARK_EXECUTOR_MEMORY="1234m")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "memory=1234m" in out.stdout and "typo=None" in out.stdout
