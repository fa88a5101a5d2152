"""Registering a chosen model in the MLflow Model Registry.

The model is logged as an MLflow pyfunc that wraps the verified served artifact — the
TorchScript export (the one torch format every candidate supports, int8 included), the
ONNX file of a candidate deployed on onnxruntime, or the torch.export program of a
torch_compile candidate (compiled when the model is loaded) — inside a ``deploy-trial-N`` run
nested under the study's parent run, with the deployment spec beside it. The version gets
an alias (``champion`` by default) and the measured objectives as tags, so
``mlflow.pyfunc.load_model("models:/NAME@champion")`` serves it.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from slimsearch.evaluators.runtimes import load_artifact
from slimsearch.search.config import redact_url
from slimsearch.search.review.selection import DeploymentError
from slimsearch.search.store.tracking import ROLE_TAG, find_parent_run


class ServedClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc: rows (flattened or shaped) in the task's input dtype -> logits, via the served
    artifact on its runtime (TorchScript, ONNX on onnxruntime, or a torch.export program compiled)."""

    def __init__(self, input_shape: list[int], input_dtype: str = "float32", input_names: list[str] | None = None):
        self.input_shape = tuple(input_shape)
        self.input_dtype = input_dtype
        self.input_names = input_names or []

    def load_context(self, context: Any) -> None:
        self.model = load_artifact(context.artifacts["model"])

    # np.ndarray is the one annotation MLflow neither warns about (in raw ANSI colours, where a
    # hint is missing or unsupported) nor turns into a schema: the logged signature, from real
    # rows, says what the model takes -- an array, or a dict of arrays for named inputs.
    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        if self.input_names and isinstance(model_input, dict):  # several named inputs, packed as served
            model_input = np.stack([np.asarray(model_input[name]) for name in self.input_names], axis=1)
        rows = np.asarray(model_input, dtype=getattr(np, self.input_dtype))
        batch = torch.as_tensor(rows).reshape(-1, *self.input_shape)
        with torch.inference_mode():
            return self.model(batch).numpy()


@dataclass(frozen=True)
class Registration:
    model_name: str
    version: str
    alias: str
    run_id: str


def register_model(
    tracking_uri: str,
    experiment: str,
    study_name: str,
    trial_number: int,
    model_name: str,
    alias: str,
    served: Path,
    extra_files: list[Path],
    input_signature: dict[str, Any],
    version_tags: dict[str, str],
    example: tuple[np.ndarray | dict[str, np.ndarray], np.ndarray],
) -> Registration:
    """Log the served artifact as a pyfunc whose input/output signature is inferred from
    ``example`` (real rows and the compressed model's outputs), register and alias it."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise DeploymentError(f"MLflow experiment '{experiment}' not found at {redact_url(tracking_uri)}; "
                              "set tracking.tracking_uri / tracking.experiment to where the study logged")
    tags = {ROLE_TAG: "deployment", "trial_number": str(trial_number)}
    if parent := find_parent_run(client, found.experiment_id, study_name):
        tags["mlflow.parentRunId"] = parent
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(experiment_id=found.experiment_id, run_name=f"deploy-trial-{trial_number:04d}", tags=tags) as run:
        for path in extra_files:
            mlflow.log_artifact(str(path), artifact_path="deployment")
        printed = io.StringIO()  # MLflow prints "Successfully registered ..." itself; the line after says it
        with contextlib.redirect_stderr(printed):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=ServedClassifier(input_signature["input_shape"], input_signature["input_dtype"],
                                              input_signature.get("input_names")),
                artifacts={"model": str(served)},
                signature=infer_signature(*example),
                input_example=example[0],
                registered_model_name=model_name,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "numpy"],
            )
        logging.getLogger("mlflow").info(printed.getvalue().strip())
    version = str(info.registered_model_version)
    client.set_registered_model_alias(model_name, alias, version)
    for key, value in version_tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    return Registration(model_name, version, alias, run.info.run_id)
