"""The Spark score backfill per the registry's rollout plan (`backfill scores --plan`), on
`local[2]` with a real MLflow registry: champion and challenger trained on different feature
versions, each scoring its own feature rows; every content gets exactly one served row, from the
version its arm (the stream's own function) gives it; shadow rows never reach the served views;
plan changes, promote and rollback move the served rows with the next run; counts reconcile."""
from __future__ import annotations

from collections import Counter

import pytest

from _spark_fixtures import home_config, last_counts, submit
from jobs.backfill_features import run_feature_backfill
from jobs.backfill_scores import run_score_backfill
from jobs.reconcile import read_reports, reconcile
from jobs.score_plan import run_plan_backfill
from jobs.spark_tables import register_views
from udfs.features import FEATURE_VERSIONS
from udfs.rollout import arm, assignments

NAME = "photo_quality"
OLD, NEW = FEATURE_VERSIONS[0], FEATURE_VERSIONS[-1]


def test_the_arms_udf_is_the_streams_assignment_function():
    import hashlib

    import pandas as pd

    from udfs.rollout import RolloutPlan
    from udfs.spark_udfs import rollout_arms

    contents = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    for plan in (RolloutPlan(NAME, 1, 2, 100, 30, "s1"), RolloutPlan(NAME, 3, 4, 20, 5, "s2"), RolloutPlan(NAME, 1)):
        got = rollout_arms(plan)(pd.Series(contents))
        assert list(got["arm"]) == [arm(c, plan) for c in contents]
        for c, served, shadow in zip(contents, got["served_version"], got["shadow_version"]):
            want = {a.role: a.version for a in assignments(c, plan)}
            assert (served, None if pd.isna(shadow) else shadow) == (want["served"], want.get("shadow"))


def test_a_plan_run_names_the_registered_model_alone():
    from jobs.config import load_settings
    from jobs.score_plan import plan_model_name
    from udfs.errors import PhotoscoreError

    settings = load_settings([], env={})
    assert plan_model_name(None, settings) == settings.mlflow.model_name
    assert plan_model_name("models:/pq", settings) == "pq"
    for bad in ("models:/pq@champion", "models:/pq/3", "pq", "models:/"):
        with pytest.raises(PhotoscoreError, match="models:/NAME"):
            plan_model_name(bad, settings)


@pytest.fixture(scope="module")
def rollout_home(tmp_path_factory, versioned_frames, spark, spark_corpus):
    """A home whose `photo_quality` v1 (feature version OLD) is champion and v2 (NEW) challenger,
    and a table root with both feature versions of the Spark corpus: (config, root)."""
    from models.rollouts import promote
    from models.train import train_and_register
    from models.trainers import TrainParams

    home = tmp_path_factory.mktemp("rollout_home")
    config = home_config(home)
    versions = {}
    for feature_version in (OLD, NEW):
        fp, lp = versioned_frames[feature_version]
        versions[feature_version] = train_and_register(fp, lp, "low_quality", "xgboost", NAME, config,
                                                       TrainParams(trees=15, depth=3)).version
    assert (versions[OLD], versions[NEW]) == (1, 2)
    promote(config, NAME, 1, "champion")
    promote(config, NAME, 2, "challenger")
    root = tmp_path_factory.mktemp("rollout_tables")
    for feature_version in (OLD, NEW):
        run_feature_backfill(spark, config, str(spark_corpus / "photos"), str(root), version=feature_version)
    return config, root


def table(spark, root, view: str) -> list:
    register_views(spark, str(root))
    return spark.sql(f"SELECT content_sha256, model_version, role, score FROM {view} "
                     f"WHERE model_name = '{NAME}'").collect()


def check_plan(spark, root, plan, result) -> dict[str, str]:
    """Every invariant of a `--plan` run's tables against `plan`; returns {content: arm}."""
    register_views(spark, str(root))
    contents = {r[0] for r in spark.sql("SELECT DISTINCT content_sha256 FROM features").collect()}
    arms = {c: arm(c, plan) for c in contents}
    assert result.arms == dict(Counter(arms.values()))
    rows = table(spark, root, "scores")
    got = {(r["content_sha256"], r["model_version"], r["role"]) for r in rows}
    assert len(got) == len(rows), "one row per (content, version)"
    # Exactly the stream's assignments for the plan's versions (batch and stream: same arm).
    in_plan = {(c, a.version, a.role) for c in contents for a in assignments(c, plan)}
    assert {g for g in got if g[1] in plan.versions} == in_plan
    # Versions outside the plan hold shadow rows only.
    assert all(role == "shadow" for _, version, role in got if version not in plan.versions)
    served = table(spark, root, "scores_served")
    assert sorted(r["content_sha256"] for r in served) == sorted(contents)  # exactly one each
    assert all(r["role"] == "served" for r in served)
    assert {(r["content_sha256"], r["model_version"]) for r in served} == {
        (c, next(a.version for a in assignments(c, plan) if a.role == "served")) for c in contents}
    photo_versions = spark.sql(f"SELECT DISTINCT content_sha256, model_version FROM photo_scores "
                               f"WHERE model_name = '{NAME}'").collect()
    assert {tuple(r) for r in photo_versions} == {(r["content_sha256"], r["model_version"]) for r in served}
    # Counts reconcile per version: every content the plan gives a version is scored or known.
    for counts in result.versions:
        assert counts.rows == counts.scored + counts.known + counts.quarantined
        assert counts.quarantined == 0
        assert counts.rows == sum(1 for c in contents for a in assignments(c, plan) if a.version == counts.model_version)
    return arms


def scores_of(spark, root, version: int) -> dict[str, float]:
    return {r["content_sha256"]: r["score"] for r in table(spark, root, "scores") if r["model_version"] == version}


@pytest.mark.integration
def test_a_plan_run_serves_each_content_once_and_follows_plan_changes(spark, rollout_home):
    from models.rollouts import promote, read_plan, rollback, set_rollout, stop_rollout

    config, root = rollout_home
    tables = str(root)
    # A plain run first: the champion's rows, all served (and reused by the plan runs below).
    plain = run_score_backfill(spark, config, f"models:/{NAME}@champion", "native", tables)
    champion_scores = scores_of(spark, root, 1)
    assert plain.scored == len(champion_scores) > 6

    plan = set_rollout(config, NAME, shadow_percent=100, canary_percent=30)
    first = run_plan_backfill(spark, config, NAME, "native", tables)
    arms = check_plan(spark, root, plan, first)
    assert set(arms.values()) == {"shadow", "canary"}, "the corpus is too small to hit both arms"
    v1, v2 = first.versions
    assert (v1.model_version, v1.known, v1.scored) == (1, len(arms), 0)  # reused, not rescored
    assert (v2.model_version, v2.known, v2.scored) == (2, 0, len(arms))
    assert scores_of(spark, root, 1) == champion_scores
    challenger_scores = scores_of(spark, root, 2)
    assert challenger_scores != champion_scores

    # The canary grows (same salt): its contents move to the challenger, nothing is rescored.
    grown = set_rollout(config, NAME, canary_percent=60)
    assert grown.salt == plan.salt
    second = run_plan_backfill(spark, config, NAME, "native", tables)
    grown_arms = check_plan(spark, root, grown, second)
    canary = {c for c, a in arms.items() if a == "canary"}
    assert canary <= {c for c, a in grown_arms.items() if a == "canary"}
    assert sum(r.scored for r in second.versions) == 0
    assert scores_of(spark, root, 2) == challenger_scores

    # Stopped: the champion serves everything, the challenger's rows stay as shadow only.
    stopped = stop_rollout(config, NAME)
    third = run_plan_backfill(spark, config, NAME, "native", tables)
    check_plan(spark, root, stopped, third)
    assert third.demoted == {2: len(arms)}

    # Promoted, then rolled back: the served rows follow the champion each time.
    promote(config, NAME, 2, "champion")
    promoted = read_plan(config, NAME)
    assert check_plan(spark, root, promoted, run_plan_backfill(spark, config, NAME, "native", tables))
    assert {r["model_version"] for r in table(spark, root, "scores_served")} == {2}
    assert rollback(config, NAME) == (2, 1)
    back = run_plan_backfill(spark, config, NAME, "native", tables)
    check_plan(spark, root, read_plan(config, NAME), back)
    assert {r["model_version"] for r in table(spark, root, "scores_served")} == {1}
    assert back.demoted == {2: len(arms)}
    assert scores_of(spark, root, 1) == champion_scores

    # Each run's report holds its per-version counts as committed.
    report = read_reports(tables, back.run_id)[0]
    assert report["job"] == "scores_plan" and [v["model_version"] for v in report["versions"]] == [1]
    assert report["versions"][0]["written"]["scores"] == len(arms)
    # Airflow's reconcile checks a plan run per version (the rescore DAG runs with --plan); an
    # earlier run's rows were replaced by the later runs, as after --force, so only the last checks.
    verdict = reconcile(tables, [report], 1.0)
    assert verdict.ok and len(verdict.lines) == 1, verdict


@pytest.mark.integration
def test_spark_submit_plan_run_prints_each_version_and_reconciles(rollout_home):
    from models.rollouts import read_plan, set_rollout

    config, root = rollout_home
    plan = set_rollout(config, NAME, shadow_percent=100, canary_percent=30)
    assert plan.champion == 1 and read_plan(config, NAME).active
    done = submit("backfill_scores.py", ["--model", f"models:/{NAME}", "--plan", "--format", "native",
                                         "--tables", str(root)], config.home)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("version=1 rows=") for line in lines)
    assert any(line.startswith("version=2 rows=") for line in lines)
    counts = last_counts(done.stdout)
    assert counts["rows"] == counts["scored"] + counts["known"] + counts["quarantined"]
    refused = submit("backfill_scores.py", ["--model", f"models:/{NAME}@champion", "--plan", "--tables", str(root)],
                     config.home)
    assert refused.returncode == 1 and "models:/NAME" in refused.stdout + refused.stderr


@pytest.mark.integration
def test_a_plan_run_without_a_model_scores_every_model_of_scoring_models(spark, rollout_home, versioned_frames):
    """Several models per photo in the batch: a text model next to the quality model, each scored
    per its own plan from the same stored features, each served once per content."""
    from models.rollouts import promote
    from models.train import train_and_register
    from models.trainers import TrainParams

    config, root = rollout_home
    fp, lp = versioned_frames[OLD]
    text = train_and_register(fp, lp, "has_text", "xgboost", "photo_text", config, TrainParams(trees=15, depth=3))
    promote(config, "photo_text", int(text.version), "champion")
    done = submit("backfill_scores.py", ["--plan", "--format", "native", "--tables", str(root),
                                         "--set", f"scoring.models=[{NAME}, photo_text]"], config.home)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sum(line.startswith("run=") for line in done.stdout.splitlines()) == 2
    register_views(spark, str(root))
    contents = spark.sql("SELECT COUNT(DISTINCT content_sha256) FROM features").first()[0]
    for model in (NAME, "photo_text"):
        served = spark.sql(f"SELECT content_sha256 FROM scores_served WHERE model_name = '{model}'").collect()
        assert len(served) == len({r[0] for r in served}) == contents, model
