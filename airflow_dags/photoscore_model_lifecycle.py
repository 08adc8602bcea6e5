"""photoscore_model_lifecycle: train the configured model types (each through the parity gate) ->
pick the best new version on the validation split -> compare it with the champion on the held-out
split -> `challenger` when it wins by the configured margin -> approval -> `champion`, and the
"champion changed" Asset event that starts photoscore_rescore.

Runs on demand and on each event of the labels Asset. A version that fails its parity gate fails
the run and moves no alias; a candidate that does not beat the champion ends the run with the
reason in the log and no alias moved. Approval: the `approve` param (automation), else Airflow's
human-in-the-loop approval task in the UI.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Asset, Param, task

from jobs.orchestration import champion_asset_uri, dag_arguments, dag_settings, labels_asset_uri

settings = dag_settings()
LABELS = Asset(name="photoscore_labels", uri=labels_asset_uri(settings))
CHAMPION = Asset(name="photoscore_champion", uri=champion_asset_uri(settings))
MODEL_TYPES = ["xgboost", "lightgbm", "catboost", "logreg"]

with DAG(
    dag_id="photoscore_model_lifecycle",
    **dag_arguments(settings, "Train, gate, compare and promote a new model version", [LABELS]),
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
    def set_challenger(decision: dict, params=None) -> int:
        from models.registry import promote

        promote(dag_settings(), params["name"], str(decision["version"]), "challenger")
        print(f"{params['name']}@challenger -> v{decision['version']}")
        return decision["version"]

    @task.branch
    def approval_route(params=None) -> str:
        return "approved_by_param" if params["approve"] else "approval"

    @task
    def approved_by_param() -> None:
        print("approved by the `approve` param")

    approval = ApprovalOperator(
        task_id="approval", subject="Promote the challenger to champion?",
        body="{{ ti.xcom_pull(task_ids='compare')['reason'] }}", ignore_downstream_trigger_rules=True,
        # A person answers in the UI: the wait is the response timeout, not an execution timeout.
        execution_timeout=None, response_timeout=timedelta(days=7),
    )

    @task(trigger_rule="none_failed_min_one_success", outlets=[CHAMPION])
    def promote_champion(version: int, params=None, outlet_events=None) -> int:
        from models.lifecycle import alias_version
        from models.registry import promote

        settings_now = dag_settings()
        previous = alias_version(settings_now, params["name"], "champion")
        promote(settings_now, params["name"], str(version), "champion")
        print(f"{params['name']}@champion: v{previous} -> v{version}")
        outlet_events[CHAMPION].extra = {"name": params["name"], "version": version, "previous": previous}
        return version

    decision = compare(pick_best(train.expand(model_type=model_types())))
    challenger = set_challenger(decision)
    route = approval_route()
    by_param = approved_by_param()
    challenger_won(decision) >> challenger >> route >> [by_param, approval]
    [by_param, approval] >> promote_champion(challenger)
