"""The one home of ``torch.distributed`` calls: finding the process group and moving data.

Monitors need a few collective operations when the ranks of a data-parallel job each
hold a shard of a batch: agree that every rank is ready (or make every rank raise
together), gather rows, exchange small vectors and Python objects, broadcast a result.
They live here, below the training families, because ``observe`` must work under
``torchrun`` in a plain loop, with no integration imported; nothing here knows what a
family computes.

``torch.distributed`` is looked up in ``sys.modules``, never imported: a process group
cannot exist unless the caller imported it. Design: ``rfcs/0012-architecture.md``.

Failure agreement
    A rank that cannot take part (a bad shard, say) must not leave the others waiting in
    a collective. Every collective step therefore starts with :func:`agree`: each rank
    contributes a verdict and a small header; when any rank failed, that rank raises its
    own error and every other rank an error naming it (an
    :class:`~geno_lewm.errors.InputError` when the failing rank's was one, else a
    :class:`~geno_lewm.errors.DistributedError`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from geno_lewm.errors import DistributedError, InputError

__all__ = [
    "ErrorDescription",
    "agree",
    "all_gather_floats",
    "all_gather_objects",
    "all_gather_rows",
    "broadcast_object",
    "check_uniform",
    "comm_device",
    "describe_error",
    "gather_to_rank0",
    "process_group",
    "raise_for_failures",
    "rank",
    "require_group",
    "world_size",
]

ErrorDescription = tuple[str, str, bool]
"""What travels between ranks about an error: its class name, its message, and whether
it was an :class:`~geno_lewm.errors.InputError`."""


# ------------------------------------------------------------------ the group
def process_group() -> Any:
    """``torch.distributed`` when it is imported and its default group initialised, else ``None``."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def world_size() -> int:
    """Ranks in the default process group; 1 when none is initialised (never imports torch)."""
    dist = process_group()
    return 1 if dist is None else int(dist.get_world_size())


def rank() -> int:
    """The rank of this process in the default process group; 0 when none is initialised."""
    dist = process_group()
    return 0 if dist is None else int(dist.get_rank())


def require_group() -> Any:
    """``torch.distributed`` with an initialised default group; :class:`InputError` otherwise."""
    dist = process_group()
    if dist is None:
        raise InputError(
            "no torch.distributed process group is initialised: call torch.distributed.init_process_group first",
            details={"field": "process_group"},
        )
    return dist


def comm_device(dist: Any, torch: Any, preferred: Any = None) -> Any:
    """Where collectives of the default group take tensors: the current CUDA device for
    NCCL, the CPU otherwise (gloo, MPI); a mixed ``cpu:gloo,cuda:nccl`` group follows
    ``preferred`` (the data's device).
    """
    backend = str(dist.get_backend()).lower()
    if "nccl" not in backend:
        return torch.device("cpu")
    on_cuda = preferred is not None and getattr(preferred, "type", None) == "cuda"
    if "gloo" in backend and not on_cuda:
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


# ------------------------------------------------------------------ failures
def describe_error(error: BaseException) -> ErrorDescription:
    """``error`` as it is sent to the other ranks."""
    return type(error).__name__, str(error), isinstance(error, InputError)


def raise_for_failures(
    descriptions: Sequence[ErrorDescription | None], own: BaseException | None, *, doing: str
) -> None:
    """Raise on every rank when any rank failed; return when none did.

    ``descriptions`` holds, rank by rank, ``None`` or the :func:`describe_error` of that
    rank's failure; ``own`` is this rank's error. The failing rank re-raises its own error;
    the others raise one naming the first failing rank, what it could not do (``doing``,
    e.g. ``"check its shard of the validation batch"``) and its message.
    """
    failed = [index for index, description in enumerate(descriptions) if description is not None]
    if not failed:
        return
    if own is not None:
        raise own
    first = failed[0]
    kind, text, is_input = descriptions[first] or ("error", "unknown", False)
    message = f"rank {first} of {len(descriptions)} could not {doing} ({kind}): {text}"
    if is_input:
        raise InputError(message, details={"field": "rank", "rank": first, "error": kind})
    raise DistributedError(message)


def agree(
    dist: Any, torch: Any, device: Any, error: BaseException | None, header: Sequence[float], *, doing: str
) -> list[list[float]]:
    """All-gather ``[ok, *header]`` from every rank (one small float64 collective) and
    return the headers rank by rank; raise on every rank if any failed.

    The error messages are exchanged only on the failure path, so a healthy check costs
    one collective of a few numbers.
    """
    local = torch.tensor([0.0 if error is not None else 1.0, *header], dtype=torch.float64, device=device)
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    rows: list[list[float]] = torch.stack(gathered).cpu().tolist()
    if all(row[0] == 1.0 for row in rows):
        return [row[1:] for row in rows]
    descriptions = all_gather_objects(dist, None if error is None else describe_error(error))
    raise_for_failures([d if row[0] != 1.0 else None for d, row in zip(descriptions, rows)], error, doing=doing)
    raise AssertionError("unreachable: a rank failed")  # pragma: no cover


def check_uniform(headers: Sequence[Sequence[float]], column: int, what: str) -> None:
    """Refuse, on every rank alike, headers whose ``column`` differs between ranks."""
    values = [header[column] for header in headers]
    if any(v != values[0] for v in values):
        shown = ", ".join(f"rank {i}: {v:g}" for i, v in enumerate(values))
        raise InputError(
            f"every rank must pass the same {what} to a distributed check: got {shown}",
            details={"field": what, "values": values},
        )


# ------------------------------------------------------------------ moving data
def all_gather_objects(dist: Any, value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), rank by rank."""
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def all_gather_floats(dist: Any, torch: Any, device: Any, values: Sequence[float]) -> list[list[float]]:
    """Every rank's ``values`` (the same length everywhere), rank by rank, as float64."""
    vector = torch.tensor(list(values), dtype=torch.float64, device=device)
    gathered = [torch.empty_like(vector) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, vector)
    result: list[list[float]] = torch.stack(gathered).cpu().tolist()
    return result


def gather_to_rank0(dist: Any, torch: Any, device: Any, shards: Any, *, rows: Sequence[int], itemsize: int) -> Any:
    """Gather the ``[k, n_r, D]`` stacks the ranks hold on rank 0 and return their
    concatenation along rows there (``None`` elsewhere).

    ``rows`` are the ranks' ``n_r``; stacks are padded to the largest and sent as raw bytes
    of ``itemsize``-byte floats, so no dtype is altered on the way.
    """
    dtype = torch.float64 if itemsize == 8 else torch.float32
    longest = max(rows)
    buffer = torch.zeros((int(shards.shape[0]), longest, int(shards.shape[2])), dtype=dtype, device=device)
    buffer[:, : shards.shape[1]] = shards.to(device=device, dtype=dtype)
    payload = buffer.view(torch.uint8)
    if dist.get_rank() == 0:
        received = [torch.empty_like(payload) for _ in rows]
        dist.gather(payload, received, 0)
        parts = [part.view(dtype)[:, :count] for part, count in zip(received, rows)]
        return torch.cat(parts, dim=1)
    dist.gather(payload, None, 0)
    return None


def broadcast_object(dist: Any, device: Any, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (the others pass anything)."""
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def all_gather_rows(tensor: Any) -> Any:
    """Concatenate, in rank order, the ``[n_r, ...]`` tensors the ranks pass (``n_r`` may
    differ; the other dimensions and the dtype must not). Every rank gets the result.

    For feeding a lens (logits for the prediction-dynamics monitor, say) the whole batch.
    With no process group, or one rank, ``tensor`` itself is returned.
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(tensor, torch.Tensor) or tensor.ndim < 1:
        raise InputError(
            f"'tensor' must be a tensor of at least one dimension: got {type(tensor).__name__}",
            details={"field": "tensor", "type": type(tensor).__name__},
        )
    dist = process_group()
    if dist is None or dist.get_world_size() == 1:
        return tensor
    device = comm_device(dist, torch, tensor.device)
    trailing = [float(s) for s in tensor.shape[1:]]
    header = [float(tensor.shape[0]), float(tensor.ndim), float(tensor.element_size()), *trailing]
    lengths = all_gather_floats(dist, torch, device, [float(len(header))])
    if any(int(length[0]) != len(header) for length in lengths):
        raise InputError(
            "every rank must pass a tensor with the same number of dimensions", details={"field": "tensor"}
        )
    headers = all_gather_floats(dist, torch, device, header)
    for column, what in ((2, "element size"), *((3 + i, f"size of dimension {i + 1}") for i in range(len(trailing)))):
        check_uniform(headers, column, what)
    counts = [int(h[0]) for h in headers]
    buffer = torch.zeros((max(counts), *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    buffer[: tensor.shape[0]] = tensor.detach().contiguous().to(device)
    payload = buffer.view(torch.uint8) if buffer.ndim and buffer.numel() else buffer
    received = [torch.empty_like(payload) for _ in counts]
    dist.all_gather(received, payload)
    parts = [part.view(tensor.dtype)[:count] for part, count in zip(received, counts)]
    return torch.cat(parts, dim=0).to(tensor.device)
