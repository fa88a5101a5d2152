"""One served request per strategy, as each rank executes it (runs inside probe ranks).

A step is what is timed: the request arrives at rank 0 and its answer must be back on
rank 0, so every communication a deployment would pay is inside the step.

* ``single``: the model on the batch.
* ``data_parallel``: scatter the batch, each rank runs its shard, gather on rank 0.
* ``tensor_parallel``: broadcast the batch; Linear layers sharded by DTensor
  (column-wise then row-wise, one all-reduce per pair) compute it together.
* ``pipeline_parallel``: rank ``r`` runs stage ``r``; the batch flows through in
  micro-batches (GPipe-style, non-blocking sends so stages overlap), the last stage
  sends results back to rank 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.distributed as dist
from torch import nn

from slimsearch.evaluators.runtimes import load_artifact
from slimsearch.evaluators.families import transformer_layers, use_rank_widths
from slimsearch.evaluators.rank_plans import tensor_parallel_plans

if TYPE_CHECKING:
    from slimsearch.evaluators.serving_probe import ServingJob

Step = Callable[[], "torch.Tensor | None"]


def load_rank_model(job: ServingJob, rank: int) -> nn.Module:
    """The module rank ``rank`` serves: its TorchScript (or ONNX) file, or the eager model sharded."""
    path = job.rank_files[rank]
    if job.strategy != "tensor_parallel":
        return load_artifact(path, job.threads)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    # A pickled module written by rank_plans for this very job, not a user-supplied file.
    model = torch.load(path, weights_only=False).eval()
    mesh = init_device_mesh("cpu", (job.degree,))
    layers = transformer_layers(model)
    for owner, plan in tensor_parallel_plans(model, job.degree):
        styles = {name: ColwiseParallel() if style == "colwise" else RowwiseParallel() for name, style in plan.items()}
        parallelize_module(model.get_submodule(owner), mesh, styles)
    for layer in layers:
        use_rank_widths(layer, job.degree)
    return model


def local_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights this rank holds (its shards, for DTensor parameters)."""
    total = 0
    for tensor in model.state_dict().values():
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        total += local.numel() * local.element_size()
    return total


def make_step(job: ServingJob, model: nn.Module, batch: torch.Tensor, rank: int) -> Step:
    builders = {"single": _single, "data_parallel": _data_parallel,
                "tensor_parallel": _tensor_parallel, "pipeline_parallel": _pipeline}
    return builders[job.strategy](job, model, batch, rank)


def _single(job: ServingJob, model: nn.Module, batch: torch.Tensor, rank: int) -> Step:
    return lambda: model(batch)


def _data_parallel(job: ServingJob, model: nn.Module, batch: torch.Tensor, rank: int) -> Step:
    shard = torch.empty(batch.shape[0] // job.degree, *batch.shape[1:], dtype=batch.dtype)

    def step() -> torch.Tensor | None:
        dist.scatter(shard, list(batch.chunk(job.degree)) if rank == 0 else None, src=0)
        out = model(shard)
        gathered = [torch.empty_like(out) for _ in range(job.degree)] if rank == 0 else None
        dist.gather(out, gathered, dst=0)
        return torch.cat(gathered) if gathered else None

    return step


def _tensor_parallel(job: ServingJob, model: nn.Module, batch: torch.Tensor, rank: int) -> Step:
    replica = batch.clone()

    def step() -> torch.Tensor | None:
        dist.broadcast(replica, src=0)
        out = model(replica)  # row-wise layers all-reduce, so every rank holds the answer
        return out if rank == 0 else None

    return step


def _pipeline(job: ServingJob, model: nn.Module, batch: torch.Tensor, rank: int) -> Step:
    chunks = list(batch.chunk(job.micro_batches))
    micro = len(chunks[0])
    last = job.degree - 1

    def buffer(boundary: int) -> torch.Tensor:
        shape, dtype = job.boundaries[boundary]
        return torch.empty(micro, *shape, dtype=getattr(torch, dtype))

    def step() -> torch.Tensor | None:
        pending, in_flight = [], []
        results = [buffer(last) for _ in chunks] if rank == 0 else []
        pending += [dist.irecv(result, src=last) for result in results]
        for chunk in chunks:
            if rank == 0:
                activation = chunk
            else:
                activation = buffer(rank - 1)
                dist.recv(activation, src=rank - 1)
            out = model(activation).contiguous()
            in_flight.append(out)  # kept alive until its send completes
            pending.append(dist.isend(out, dst=(rank + 1) % job.degree))
        for work in pending:
            work.wait()
        return torch.cat(results) if rank == 0 else None

    return step
