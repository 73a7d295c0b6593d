"""What text, vision and LoRA loading share: precisions, one registry of loaded towers, weight conversion
and assembly of a tower on the meta device.

This module sits below ``loading.py`` (text towers), ``vision_loading.py`` and ``lora.py``; it imports
none of them, so the loaders form no cycle.
"""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch

from .weight_files import ModelFileError, WeightReader

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_SHARED: "weakref.WeakValueDictionary[tuple, torch.nn.Module]" = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def dtypes_for(precision: str, device: torch.device) -> tuple[torch.dtype, torch.dtype, bool]:
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
    """No NaN/inf in a float tensor (two reductions; half types on the CPU are checked in fp32, faster)."""
    if not t.is_floating_point() or t.numel() == 0:
        return True
    if t.dtype in (torch.float16, torch.bfloat16) and t.device.type == "cpu":
        t = t.float()
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


def convert_weights(sd: dict, precision: str, device, storage_dtype, where: str) -> torch.dtype:
    """Convert a state dict in place to the precision's storage dtype (fp16-rounded for ``auto``) on
    ``device``, refusing NaN/inf; returns the compute dtype. ``where`` names the file in errors.

    A value may be a list of tensors to stack by rows (see ``formats.fuse_qkv``). Each result is written
    once into its final tensor; tensors are converted two at a time, because filling freshly allocated
    memory (page faults) rather than arithmetic is what a load spends its time on.
    """
    device = torch.device(device)
    storage, compute, round_fp16 = dtypes_for(precision, device)
    storage = storage_dtype or storage

    def convert(item):
        name, value = item
        parts = value if isinstance(value, list) else [value]
        floating = parts[0].is_floating_point()
        shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:]) if isinstance(value, list) else value.shape
        out = torch.empty(shape, dtype=storage if floating else parts[0].dtype, device=device)
        row = 0
        for part in parts:
            if floating and round_fp16 and part.dtype != torch.float16:
                part = part.to(torch.float16)
            target = out[row : row + part.shape[0]] if isinstance(value, list) else out
            target.copy_(part)
            row += part.shape[0] if isinstance(value, list) else 0
        if not all_finite(out):
            raise ModelFileError(f"{where}: tensor {name} holds NaN or infinite values; the file is corrupt")
        return name, out

    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, tensor in pool.map(convert, list(sd.items())):
            sd[name] = tensor
    return compute


def assemble(tower_class, cfg, sd: dict, compute: torch.dtype, where: str, what: str):
    """Build ``tower_class(cfg)`` on the meta device and assign ``sd`` (no random init, no copy); the
    tower gets its compute dtype, a fresh ``cache_id`` and ``where`` as its ``source`` (for messages)."""
    with torch.device("meta"):
        tower = tower_class(cfg, source=where, compute_dtype=compute)
    try:
        tower.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise ModelFileError(f"{where}: {what} is incomplete or misshapen: {e}") from e
    tower.eval().requires_grad_(False)
    return tower
