"""photoscore_model_lifecycle: train the configured model types (each through the parity gate) ->
pick the best new version on the validation split -> compare it with the champion on the held-out
split -> `challenger` when it wins by the configured margin -> the staged rollout (shadow 100 % ->
compare -> canary 5 % -> compare -> canary 50 % -> compare, each comparison over the score table
after a `backfill scores --plan`) -> approval -> `champion`, and the "champion changed" Asset event
that starts photoscore_rescore. A failed stage stops the rollout (the champion alone serves again)
and fails the run. With no champion yet there is nothing to roll out against: straight to approval.

Runs on demand, on each event of the labels Asset and on each retrain request (photoscore_monitor,
after repeated drift alarms). A version that fails its parity gate fails
the run and moves no alias; a candidate that does not beat the champion ends the run with the
reason in the log and no alias moved. Approval: the `approve` param (automation), else Airflow's
human-in-the-loop approval task in the UI.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Asset, Param, task

from jobs.orchestration import (ROLLOUT_STAGES, champion_asset_uri, dag_actor, dag_arguments, dag_settings,
                                labels_asset_uri, plan_score_backfill, retrain_asset_uri)

settings = dag_settings()
LABELS = Asset(name="photoscore_labels", uri=labels_asset_uri(settings))
CHAMPION = Asset(name="photoscore_champion", uri=champion_asset_uri(settings))
RETRAIN = Asset(name="photoscore_retrain_request", uri=retrain_asset_uri(settings))
MODEL_TYPES = ["xgboost", "lightgbm", "catboost", "logreg"]

with DAG(
    dag_id="photoscore_model_lifecycle",
    **dag_arguments(settings, "Train, gate, compare and promote a new model version",
                    LABELS | RETRAIN),
    params={
        "features": Param(settings.airflow.lifecycle_features, type="string",
                          description="training features parquet (photoscore features)"),
        "labels": Param(settings.airflow.lifecycle_labels, type="string",
                        description="labels parquet (photoscore corpus)"),
        "target": Param(settings.airflow.lifecycle_target, type="string", description="0/1 label column"),
        "name": Param(settings.mlflow.model_name, type="string", minLength=1, description="registered model"),
        "model_types": Param(settings.airflow.lifecycle_model_types, type="array", minItems=1,
                             items={"type": "string", "enum": MODEL_TYPES}, description="model types to train"),
        "margin": Param(settings.airflow.promotion_margin, type="number", minimum=0,
                        description="held-out AUC a new version must gain over the champion"),
        "approve": Param(False, type="boolean",
                         description="promote without asking (automation); false: approve in the UI"),
        "tables": Param(settings.resolve(settings.storage.tables), type="string", minLength=1,
                        description="the table root the rollout stages score and compare on"),
        "format": Param(settings.scoring.format, type="string", minLength=1,
                        description="the export the rollout stages score with"),
        "stage_wait_s": Param(0, type="integer", minimum=0, maximum=settings.airflow.task_timeout_s // 2,
                              description="seconds each rollout stage runs (live traffic) before its comparison"),
    },
) as dag:

    @task
    def model_types(params=None) -> list[str]:
        """The types to train (after checking the run names its training data)."""
        from airflow.sdk.exceptions import AirflowFailException

        missing = [key for key in ("features", "labels") if not params[key]]
        if missing:
            raise AirflowFailException(f"no training {' or '.join(missing)}: set the params or "
                                       f"airflow.lifecycle_{missing[0]} in photoscore's config")
        return list(params["model_types"])

    @task(retries=0)  # a failed gate is a verdict, not a transient error
    def train(model_type: str, params=None) -> dict:
        """Train one model type, build its bundle, run the parity gate, register the version."""
        from airflow.sdk.exceptions import AirflowFailException

        from models.parity import describe_failures
        from models.train import train_and_register
        from models.trainers import TrainParams

        result = train_and_register(params["features"], params["labels"], params["target"], model_type,
                                    params["name"], dag_settings(), TrainParams())
        print(f"{model_type}: registered {result.name} version {result.version} "
              f"(parity {result.built.parity['verdict']})")
        if not result.built.passed:
            raise AirflowFailException(f"{model_type} v{result.version} failed its parity gate: "
                                       + "; ".join(describe_failures(result.built.parity)))
        return {"model_type": model_type, "version": result.version}

    @task
    def pick_best(trained: list[dict], params=None) -> int:
        """The new version with the best validation metrics."""
        from models.lifecycle import lifecycle_data, measure, pick_best as best

        data = lifecycle_data(params["features"], params["labels"], params["target"])
        measured = [measure(dag_settings(), params["name"], t["version"], data, "validation") for t in trained]
        for m in measured:
            print(m.line())
        winner = best(measured)
        print(f"best new version: v{winner.version}")
        return winner.version

    @task
    def compare(version: int, params=None) -> dict:
        """The candidate and the champion on the same held-out split."""
        from models.lifecycle import alias_version, beats_champion, lifecycle_data, measure

        settings_now = dag_settings()
        data = lifecycle_data(params["features"], params["labels"], params["target"])
        candidate = measure(settings_now, params["name"], version, data, "test")
        champion_version = alias_version(settings_now, params["name"], "champion")
        champion = (measure(settings_now, params["name"], champion_version, data, "test")
                    if champion_version is not None else None)
        challenge, reason = beats_champion(candidate, champion, float(params["margin"]))
        print(reason)
        return {"version": version, "challenge": challenge, "reason": reason}

    @task.short_circuit
    def challenger_won(decision: dict) -> bool:
        """Go on only when the candidate won (otherwise the run ends here, no alias moved)."""
        print(decision["reason"])
        return decision["challenge"]

    @task
    def set_challenger(decision: dict, params=None, run_id=None) -> int:
        from models.rollouts import promote

        promote(dag_settings(), params["name"], decision["version"], "challenger",
                who=dag_actor(dag.dag_id, run_id), why=decision["reason"])
        print(f"{params['name']}@challenger -> v{decision['version']}")
        return decision["version"]

    @task.branch
    def rollout_route(params=None) -> str:
        """The staged rollout needs a champion to compare with; the first model goes to approval."""
        from models.lifecycle import alias_version

        if alias_version(dag_settings(), params["name"], "champion") is None:
            print("no champion yet: nothing to roll out against, straight to approval")
            return "no_rollout"
        return f"set_{ROLLOUT_STAGES[0].name}"

    @task
    def no_rollout() -> None:
        print("first champion: no staged rollout")

    def rollout_stage(stage, challenger_version):
        """set the plan's shares (then let the stage run) -> score the archive per the plan -> compare."""

        @task(task_id=f"set_{stage.name}")
        def set_stage(version: int, params=None, run_id=None) -> str:
            import time

            from models.rollouts import set_rollout

            plan = set_rollout(dag_settings(), params["name"], challenger=version,
                               shadow_percent=stage.shadow_percent, canary_percent=stage.canary_percent,
                               who=dag_actor(dag.dag_id, run_id), why=stage.why(run_id))
            print(plan.describe())
            if params["stage_wait_s"]:
                print(f"stage {stage.name} runs for {params['stage_wait_s']} s before its comparison")
                time.sleep(params["stage_wait_s"])
            return plan.describe()

        @task(task_id=f"compare_{stage.name}", retries=0)  # a failed comparison is a verdict
        def compare_stage(params=None, ti=None) -> dict:
            from airflow.sdk.exceptions import AirflowFailException

            from jobs.rollout_compare import report, run_compare
            from models.lifecycle import stage_summary

            plan, comparison = run_compare(dag_settings(), params["name"], tables=params["tables"])
            print("\n".join(comparison.lines()))
            figures = {"stage": stage.name, **report(plan, comparison, params["tables"])}
            print(stage_summary(stage.name, figures))
            if not comparison.passed:
                ti.xcom_push(key="failed", value=stage_summary(stage.name, figures))
                raise AirflowFailException(stage_summary(stage.name, figures))
            return figures

        setting = set_stage(challenger_version)
        scoring = plan_score_backfill(settings, stage.name)
        comparing = compare_stage()
        setting >> scoring >> comparing
        return [setting, scoring, comparing]

    @task(trigger_rule="one_failed", retries=0)
    def stop_rollout(params=None, run_id=None, ti=None) -> None:
        """A stage failed: end the rollout (the champion alone scores and serves) and say why."""
        from models.rollouts import stop_rollout as stop

        failed = [why for why in ti.xcom_pull(task_ids=[f"compare_{s.name}" for s in ROLLOUT_STAGES], key="failed")
                  if why]
        why = "; ".join(failed) or f"a rollout stage of {run_id} failed (see its task log)"
        print(stop(dag_settings(), params["name"], who=dag_actor(dag.dag_id, run_id), why=why).describe())
        print(f"rollout stopped: {why}")

    @task.branch(trigger_rule="none_failed_min_one_success")
    def approval_route(params=None) -> str:
        return "approved_by_param" if params["approve"] else "approval"

    @task
    def approved_by_param() -> None:
        print("approved by the `approve` param")

    approval = ApprovalOperator(
        task_id="approval", subject="Promote the challenger to champion?",
        body="{{ ti.xcom_pull(task_ids='compare')['reason'] }}\n\n{{ ti.xcom_pull(task_ids='compare_%s') }}"
             % ROLLOUT_STAGES[-1].name, ignore_downstream_trigger_rules=True,
        # A person answers in the UI: the wait is the response timeout, not an execution timeout.
        execution_timeout=None, response_timeout=timedelta(days=7),
    )

    @task(trigger_rule="none_failed_min_one_success", outlets=[CHAMPION])
    def promote_champion(version: int, params=None, run_id=None, outlet_events=None) -> int:
        from models.rollouts import promote

        previous = promote(dag_settings(), params["name"], version, "champion", who=dag_actor(dag.dag_id, run_id),
                           why="approved after the staged rollout")
        print(f"{params['name']}@champion: v{previous} -> v{version}")
        outlet_events[CHAMPION].extra = {"name": params["name"], "version": version, "previous": previous}
        return version

    decision = compare(pick_best(train.expand(model_type=model_types())))
    challenger = set_challenger(decision)
    route = approval_route()
    by_param = approved_by_param()
    challenger_won(decision) >> challenger
    rollout, first = rollout_route(), no_rollout()
    challenger >> rollout >> first >> route
    stages = [rollout_stage(stage, challenger) for stage in ROLLOUT_STAGES]
    rollout >> stages[0][0]
    for before, after in zip(stages, stages[1:]):
        before[-1] >> after[0]
    stages[-1][-1] >> route
    [task for stage in stages for task in stage] >> stop_rollout()
    route >> [by_param, approval]
    [by_param, approval] >> promote_champion(challenger)
