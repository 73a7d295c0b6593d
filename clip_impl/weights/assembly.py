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
from .file_checks import MODEL_FILE, float_problem
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


# The largest tower a file may describe (every real CLIP several times over: bigG's vision tower is 1664 wide
# and 48 deep); checked before a tower is built, even on the meta device, since the depth is read from key
# names ("layers.999999999.") and the widths from shapes.
TOWER_LIMITS = {"width": 16384, "layers": 256, "heads": 1024, "mlp_width": 1 << 17, "projection_dim": 16384,
                "vocab_size": 1 << 20, "positions": 1 << 16, "patch": 1024, "image_size": 16384}


def check_before_reading(reader, keys: list[str], to_state_dict, tower_class, cfg, where: str, what: str,
                         config_file=None) -> None:
    """Refuse a tower before any of its tensor data is read: a size out of :data:`TOWER_LIMITS`, a tensor
    that is not floating-point (int, bool, complex, sparse, meta), or one whose shape is not what the
    tower's layout needs. The tower is built on the meta device and the file's claimed shapes are renamed
    as the load renames the tensors (``to_state_dict`` on meta tensors), so this is the strict load's own
    check, made before reading instead of after (a header may claim a 2 GB tensor where 300 KB belong).
    ``reader`` without ``shapes`` (a stand-in serving tensors) is only checked for its sizes."""
    for name, most in TOWER_LIMITS.items():
        value = getattr(cfg, name, None)
        if value is not None and not 1 <= value <= most:
            raise ModelFileError(
                f"{where}: {what} would have {name} {value}; a CLIP tower has 1 to {most}: the file is corrupt "
                "or not a CLIP model"
            )
    shapes, dtypes = getattr(reader, "shapes", None), getattr(reader, "dtypes", {})
    if shapes is None:
        return
    metas = {}
    for key in keys:
        problem = "" if key.endswith("position_ids") else float_problem(dtypes.get(key, "F32"), MODEL_FILE)
        if problem:
            raise ModelFileError(f"{where}: tensor {key!r} {problem}; the file is corrupt or not a CLIP model")
        metas[key] = torch.empty(shapes[key], device="meta")
    try:
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in tower_class(cfg, source=where).state_dict().items()}
    except ValueError as e:  # e.g. a width the head count does not divide
        origin = f" (num_attention_heads {cfg.heads} is from {config_file})" if config_file else ""
        raise ModelFileError(f"{where}: {what} cannot be built: {e}{origin}; the file is corrupt") from e
    sd = to_state_dict(metas)
    for name, value in sd.items():
        parts = value if isinstance(value, list) else [value]
        if any(p.ndim == 0 or p.shape[1:] != parts[0].shape[1:] for p in parts):
            shape = " + ".join(str(list(p.shape)) for p in parts)
        else:
            shape = [sum(p.shape[0] for p in parts), *parts[0].shape[1:]]
        if name not in want:
            raise ModelFileError(f"{where}: {what} has no tensor {name} (the file holds one); the file is not this model")
        if shape != list(want[name]):
            raise ModelFileError(
                f"{where}: {what} needs {name} of shape {list(want[name])} but the file says {shape}: "
                "the file is corrupt or not this model (refused before reading it)"
            )
    missing = [k for k in want if k not in sd]
    if missing:
        raise ModelFileError(f"{where}: {what} is incomplete: the file has no {', '.join(missing[:3])}")


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
