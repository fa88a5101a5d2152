"""Tasks and compression stages: from a Candidate to a compressed model ready to serve.

``task`` defines the public Task API (teacher + data + metric) and loads built-in or
user tasks, adapted by ``inputs`` (several named inputs) and ``outputs`` (models that
return more than logits); ``digits`` (a CNN), ``digits_transformer`` (Linear-heavy) and
``minilm`` (a pretrained Hugging Face encoder) are the built-in offline tasks;
``training`` is the one training loop (supervised, distillation, fine-tuning); ``stages``
are the cached slow stages; ``quantize`` is the bit-width stage; ``build`` chains them
per candidate.
"""

from slimsearch.pipelines.build import AccuracyMonitor, BuiltModel, CompressionPipeline
from slimsearch.pipelines.stages import TrainingRecipe
from slimsearch.pipelines.task import Task, TaskLoadError, space_problem, top1_accuracy
from slimsearch.pipelines.task_loading import BUILTIN_TASKS, load_task

__all__ = [
    "AccuracyMonitor",
    "BUILTIN_TASKS",
    "BuiltModel",
    "CompressionPipeline",
    "Task",
    "TaskLoadError",
    "space_problem",
    "TrainingRecipe",
    "load_task",
    "top1_accuracy",
]
