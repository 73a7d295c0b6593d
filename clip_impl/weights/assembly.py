"""What text, vision and LoRA loading share: precisions, one registry of loaded towers, weight conversion
and assembly of a tower on the meta device.

This module sits below ``loading.py`` (text towers), ``vision_loading.py`` and ``lora.py``; it imports
none of them, so the loaders form no cycle.
"""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from ..towers.pending_copies import PendingCopies
from .files import ModelFileError, WeightReader

Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
_SHARED: "weakref.WeakValueDictionary[tuple, torch.nn.Module]" = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def dtypes_for(precision: Precision, device: torch.device) -> tuple[torch.dtype, torch.dtype, bool]:
    """(storage dtype, compute dtype, round through fp16 first) for a precision on a device."""
    if precision == "auto":
        storage = torch.float32 if device.type == "cpu" else torch.float16
        return storage, torch.float32, True
    if precision == "fp32":
        return torch.float32, torch.float32, False
    if precision == "fp16":
        return torch.float16, torch.float16, False
    if precision == "bf16":
        return torch.bfloat16, torch.bfloat16, False
    raise ValueError(f"precision={precision!r}; use one of {', '.join(PRECISIONS)}")


def file_identity(reader: WeightReader) -> tuple:
    """(resolved path, size, mtime): a changed file is a new identity, so stale towers are never shared."""
    st = reader.path.stat()
    return (str(reader.path.resolve()), st.st_size, st.st_mtime_ns)


def shared_tower(key: tuple, build):
    """The tower registered under ``key`` (file identity, prefix, settings), built by ``build()`` the
    first time: loading the same file twice shares one set of weights while anything still uses them."""
    with _SHARED_LOCK:
        tower = _SHARED.get(key)
        if tower is None:
            tower = build()
            _SHARED[key] = tower
    return tower


def all_finite(t: torch.Tensor) -> bool:
    """No NaN/inf in a float tensor (one ``aminmax`` pass; NaN propagates to both ends)."""
    if not t.is_floating_point() or t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


def exact(source: torch.dtype, storage: torch.dtype, round_fp16: bool) -> bool:
    """Whether converting ``source`` values to ``storage`` keeps every value (the same dtype, or fp16/bf16
    widened to fp32; never a rounding through fp16)."""
    if round_fp16 and source != torch.float16:
        return False
    return source == storage or (storage == torch.float32 and source in (torch.float16, torch.bfloat16))


def deferrable(name: str, parts: list, storage: torch.dtype, round_fp16: bool, device: torch.device) -> bool:
    """Whether an entry (its tensors, stacked by rows) may keep the file's values in the file's dtype
    until the tower copies it (``pending_copies.py``): a matrix of the encoder blocks (most of a tower's
    bytes), staying on the CPU, that becomes its storage dtype exactly."""
    first = parts[0]
    if first.ndim != 2 or ".encoder.layers." not in f".{name}" or not first.is_floating_point():
        return False
    if device.type != "cpu" or any(p.device.type != "cpu" or p.dtype != first.dtype for p in parts):
        return False
    return exact(first.dtype, storage, round_fp16)


@dataclass
class ConvertedWeights:
    """What :func:`convert_weights` did: the compute dtype, and the entries it left as the file's
    tensors (name -> the storage dtype they are to be copied into; see ``pending_copies.py``)."""

    compute: torch.dtype
    deferred: dict[str, torch.dtype]


def convert_weights(
    sd: dict, precision: Precision, device, storage_dtype, where: str, defer: bool = False
) -> ConvertedWeights:
    """Convert a state dict in place to the precision's storage dtype (fp16-rounded for ``auto``) on
    ``device``, refusing NaN/inf. ``where`` names the file in errors.

    A value may be a list of tensors to stack by rows (see ``formats.fuse_qkv``). Each result is written
    once into its final tensor; tensors are converted two at a time, because filling freshly allocated
    memory (page faults) rather than arithmetic is what a load spends its time on. With ``defer``, the
    :func:`deferrable` entries are only checked and stay as they are (the tower copies them later), so a
    load costs little more than reading the bytes once.
    """
    device = torch.device(device)
    storage, compute, round_fp16 = dtypes_for(precision, device)
    storage = storage_dtype or storage
    deferred: dict[str, torch.dtype] = {}

    def convert(item):
        name, value = item
        parts = value if isinstance(value, list) else [value]
        floating = parts[0].is_floating_point()
        later = defer and deferrable(name, parts, storage, round_fp16, device)
        if later and len(parts) == 1:
            out = value  # the file's own tensor, until the tower copies it
        else:  # one tensor of the final shape, written once
            dtype = parts[0].dtype if later or not floating else storage
            out = torch.empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]), dtype=dtype, device=device)
            row = 0
            for part in parts:
                if floating and round_fp16 and part.dtype != torch.float16:
                    part = part.to(torch.float16)
                out[row : row + part.shape[0]].copy_(part)
                row += part.shape[0]
        # An exact conversion keeps the values: check the (narrower) source, else what rounding made.
        checked = parts if floating and all(exact(p.dtype, out.dtype, round_fp16) for p in parts) else [out]
        if not all(all_finite(t) for t in checked):
            raise ModelFileError(f"{where}: tensor {name} holds NaN or infinite values; the file is corrupt")
        if later:
            deferred[name] = storage
        return name, out

    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, tensor in pool.map(convert, list(sd.items())):
            sd[name] = tensor
    return ConvertedWeights(compute, deferred)


def assemble(tower_class, cfg, sd: dict, converted: ConvertedWeights, where: str, what: str):
    """Build ``tower_class(cfg)`` on the meta device and assign ``sd`` (no random init, no copy); the
    tower gets its compute dtype, a fresh ``cache_id`` and ``where`` as its ``source`` (for messages).
    Deferred entries become the tower's pending copies (the loader starts them)."""
    with torch.device("meta"):
        tower = tower_class(cfg, source=where, compute_dtype=converted.compute)
    try:
        tower.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise ModelFileError(f"{where}: {what} is incomplete or misshapen: {e}") from e
    tower.eval().requires_grad_(False)
    if converted.deferred:
        tower.pending = PendingCopies(tower, converted.deferred)
    return tower
