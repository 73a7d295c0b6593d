"""What a weight file may claim, checked before its data is read: sizes in a zip's listing, tensor sizes and
dtypes in a header, and Hugging Face ``config.json`` values.

A file is a few bytes of header and a promise of data. ``torch.load`` inflates every entry of a checkpoint's
zip (a 4 MB file can hold a deflated 4 GiB tensor), and a ``.safetensors`` header or a pickled tensor can
claim any shape (a sparse file, or a one-element storage viewed with zero strides). So every size read from a
file is checked against what that kind of file may hold (:class:`FileKind`) first, and refused with a message
naming the file, the entry or tensor, and the limit.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and what to do."""


MiB = 1024 * 1024
# safetensors dtype names -> bytes per element (F4/F6 packed formats are not listed: their spans are
# checked against at least one bit per element).
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
               "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "C64": 8}
FLOAT_NAMES = ("F16", "BF16", "F32", "F64")
FP8_NAMES = ("F8_E4M3", "F8_E5M2")
_TORCH_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        _TORCH_NAMES[getattr(torch, _attr)] = _name
_MAX_ZIP_ENTRIES = 1_000_000  # a checkpoint has one entry per tensor storage (an SDXL one: about 2,600)


@dataclass(frozen=True)
class FileKind:
    """What one kind of weight file may hold. ``max_unpacked`` is the bytes its zip entries may unpack to:
    a fixed number, or None for ``2 x the file's size + 64 MiB`` (``torch.save`` never compresses, so a
    real checkpoint unpacks to about its own size)."""

    name: str  # "aesthetic head", "model file"
    max_file_bytes: int | None = None
    max_header_bytes: int = 16 * 1024 * 1024  # a .safetensors header (SDXL's: 200 KB, 2,600 tensors)
    # JSON values (counted as the commas and brackets) a header may list: a tensor takes about 7, so 1 M
    # leaves room for 140,000 tensors, and parsing stays within about 80 MB.
    max_header_values: int = 1_000_000
    # A checkpoint's pickle (a zip's data.pkl: names, shapes, strides; SDXL's is 200 KB), which the pure-Python
    # weights_only unpickler turns into objects at up to about 30 bytes of memory per byte.
    max_pickle_bytes: int = 4 * 1024 * 1024
    max_unpacked: int | None = None
    max_tensors: int | None = None
    max_elements: int | None = None  # all tensors together
    max_dim: int | None = None  # every dimension of every tensor
    allow_fp8: bool = True  # read as float (models); a head must be plain floats

    @property
    def a_name(self) -> str:
        return ("an " if self.name[0] in "aeiou" else "a ") + self.name

    def unpacked_limit(self, file_size: int) -> int:
        return self.max_unpacked if self.max_unpacked is not None else 2 * file_size + 64 * MiB


MODEL_FILE = FileKind("model file")
# The published heads: v1 Linear(768, 1) (3 KB), v2 MLP 768-1024-128-64-16-1 (0.9 M parameters, 3.7 MB). An
# MLP on ViT-bigG's 1280-wide embeddings with a 2048-wide first layer is 2.9 M: 4 M parameters, 4096 wide,
# 64 tensors and 64 MiB of file (float64 with room to spare) hold every head there is with margin.
AESTHETIC_HEAD = FileKind("aesthetic head", max_file_bytes=64 * MiB, max_header_bytes=MiB, max_pickle_bytes=MiB,
                          max_unpacked=64 * MiB, max_tensors=64, max_elements=4 * 1024 * 1024, max_dim=4096,
                          allow_fp8=False)


def _human(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n} bytes"


def check_file_size(file: Path, size: int, kind: FileKind) -> None:
    """Refuse a file larger than its kind may be (a sparse file counts by the size it claims)."""
    if kind.max_file_bytes is not None and size > kind.max_file_bytes:
        raise ModelFileError(
            f"{file} is {_human(size)}; {kind.a_name} is at most {_human(kind.max_file_bytes)}: this is "
            f"not {kind.a_name} (refused before reading it)"
        )


def is_zip_checkpoint(file: Path) -> bool:
    """What torch.load takes for a zip (its first bytes); anything else it reads as a legacy pickle."""
    with open(file, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def check_zip_listing(file: Path, size: int, kind: FileKind) -> bool:
    """For a zip checkpoint, the sizes its central directory says its entries unpack to, before any entry
    is read: each and all together at most ``kind``'s limit. Not a zip (a legacy checkpoint): nothing to do,
    its data cannot be more than the file, nor a pickle's. Returns whether the file is a zip whose entries
    are all stored uncompressed (as ``torch.save`` writes them): one ``torch.load(mmap=True)`` can map."""
    if not is_zip_checkpoint(file):
        return False
    _check_entry_count(file)
    limit = kind.unpacked_limit(size)
    total = 0
    try:
        with zipfile.ZipFile(file) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as e:
        raise ModelFileError(f"{file}: its zip listing is unreadable ({e}); the file is corrupt: get it again") from e
    for info in infos:
        total += info.file_size
        if "/data/" not in f"/{info.filename}" and info.file_size > kind.max_pickle_bytes:
            raise ModelFileError(
                f"{file}: entry {info.filename!r} is {_human(info.file_size)}; the pickle of {kind.a_name} "
                f"(names and shapes) is at most {_human(kind.max_pickle_bytes)}: it is corrupt or not a checkpoint"
            )
        if info.file_size > limit or total > limit:
            what = f"entry {info.filename!r} unpacks to {_human(info.file_size)}"
            if info.file_size <= limit:
                what = f"its entries up to {info.filename!r} unpack to {_human(total)}"
            holder = kind.a_name if kind.max_unpacked is not None else f"{kind.a_name} of {_human(size)}"
            raise ModelFileError(
                f"{file}: {what}, more than {holder} may hold ({_human(limit)}); it is not a real checkpoint "
                "(a compressed 'zip bomb'?): refused before unpacking it"
            )
    return all(info.compress_type == zipfile.ZIP_STORED for info in infos)


class _OverBudget(Exception):
    pass


class _BudgetReader:
    """A file's ``read``/``readline`` that stop after ``budget`` bytes (pickletools reads through these)."""

    def __init__(self, f, budget: int):
        self.f, self.left = f, budget

    def _take(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise _OverBudget
        return data

    def read(self, n: int = -1) -> bytes:
        return self._take(self.f.read(self.left + 1 if n < 0 else min(n, self.left + 1)))

    def readline(self, n: int = -1) -> bytes:
        return self._take(self.f.readline(self.left + 1 if n < 0 else min(n, self.left + 1)))


def check_legacy_pickle(file: Path, kind: FileKind) -> None:
    """For a checkpoint that is not a zip (torch's legacy format: five pickles, then the raw tensor bytes),
    the pickled part may be at most ``kind.max_pickle_bytes``, as a zip's data.pkl: its opcodes are walked
    (``pickletools.genops``, which builds no objects) before torch's unpickler makes an object for each."""
    import pickletools

    with open(file, "rb") as f:
        reader = _BudgetReader(f, kind.max_pickle_bytes)
        try:
            for _ in range(5):  # magic number, protocol, system info, the weights' table, storage keys
                for _op in pickletools.genops(reader):
                    pass
        except _OverBudget:
            raise ModelFileError(
                f"{file}: its pickle (names and shapes) runs past {_human(kind.max_pickle_bytes)}, more than "
                f"{kind.a_name} holds: it is corrupt or not a checkpoint"
            ) from None
        except Exception:  # noqa: BLE001  (not a pickle here: torch.load reports it, having read no further)
            return


def _check_entry_count(file: Path) -> None:
    """Read the entry count from the end-of-central-directory record, so a listing of millions of entries
    is refused before Python's zipfile builds an object for each."""
    with open(file, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        f.seek(max(0, end - 65557))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return  # zipfile will say what is wrong
    count = struct.unpack("<H", tail[at + 10 : at + 12])[0]
    if count == 0xFFFF:  # zip64: the count is in the zip64 record the locator points to
        loc = tail.rfind(b"PK\x06\x07", 0, at)
        if loc >= 0 and loc + 20 <= len(tail):
            offset = struct.unpack("<Q", tail[loc + 8 : loc + 16])[0]
            with open(file, "rb") as f:
                f.seek(min(offset, end))
                record = f.read(56)
            if record[:4] == b"PK\x06\x06" and len(record) >= 40:
                count = struct.unpack("<Q", record[32:40])[0]
    if count > _MAX_ZIP_ENTRIES:
        raise ModelFileError(
            f"{file}: its zip lists {count} entries; a checkpoint has one per tensor (at most "
            f"{_MAX_ZIP_ENTRIES}): the file is corrupt or not a checkpoint"
        )


def check_header_tensors(file: Path, entries: dict, kind: FileKind) -> None:
    """``entries``: tensor name -> (dtype name, shape) as a header claims them, before any is read: count,
    dimensions and elements within ``kind``'s limits."""
    if kind.max_tensors is not None and len(entries) > kind.max_tensors:
        raise ModelFileError(
            f"{file} holds {len(entries)} tensors; {kind.a_name} has at most {kind.max_tensors}: this is not "
            f"{kind.a_name}"
        )
    total = 0
    for key, (dtype, shape) in entries.items():
        count = math.prod(shape)
        total += count
        if kind.max_dim is not None and any(d > kind.max_dim for d in shape):
            raise ModelFileError(
                f"{file}: tensor {key!r} is {dtype} {list(shape)}; {kind.a_name} is at most {kind.max_dim} wide "
                f"in any dimension: this is not {kind.a_name} (refused before reading it)"
            )
        if kind.max_elements is not None and total > kind.max_elements:
            raise ModelFileError(
                f"{file}: tensor {key!r} ({dtype} {list(shape)}) brings it to {total} values; {kind.a_name} "
                f"holds at most {kind.max_elements}: this is not {kind.a_name} (refused before reading it)"
            )


def float_problem(dtype: str, kind: FileKind) -> str:
    """Why a tensor of ``dtype`` (a safetensors name, or what :func:`tensor_dtype_name` gives) cannot be
    used as weights of ``kind`` ("" when it can)."""
    if dtype in FLOAT_NAMES or (kind.allow_fp8 and dtype in FP8_NAMES):
        return ""
    if dtype in FP8_NAMES:
        return f"is {dtype} (float8); {kind.a_name} must be stored as float16, bfloat16, float32 or float64"
    return f"is {dtype}, not floating-point weights (float16, bfloat16, float32 or float64)"


def tensor_dtype_name(t: torch.Tensor) -> str:
    """A loaded tensor's dtype as a safetensors-style name, or what makes it unusable as weights (a sparse
    or quantized layout, no data on the meta device)."""
    if t.layout != torch.strided:
        return f"a {str(t.layout).removeprefix('torch.')} tensor"
    if t.device.type == "meta":
        return "a meta tensor (it holds no data)"
    if t.is_quantized:
        return f"a quantized tensor ({str(t.dtype).removeprefix('torch.')})"
    return _TORCH_NAMES.get(t.dtype, str(t.dtype).removeprefix("torch."))


def check_loaded_tensors(file, tensors: dict, kind: FileKind) -> None:
    """Loaded (not yet computed on) tensors: usable floats, and shapes within ``kind``'s limits. Shapes are
    checked as claimed, before anything touches the data (a zero-stride view claims more than it holds)."""
    for key, t in tensors.items():
        problem = float_problem(tensor_dtype_name(t), kind)
        if problem:
            raise ModelFileError(f"{file}: tensor {key!r} {problem}; this is not a usable {kind.name}")
    check_header_tensors(file, {k: (tensor_dtype_name(t), tuple(t.shape)) for k, t in tensors.items()}, kind)


# --------------------------------------------------------------------------------------- config.json
MAX_CONFIG_BYTES = MiB  # a CLIP config.json is about 5 KB
MAX_JSON_DEPTH = 32  # a CLIP config.json nests 2 deep
_CONFIG_SECTIONS = ("text_config", "vision_config")
# The size fields the loaders may read, with the largest sane value (whatever a real CLIP has, many times).
_CONFIG_INTS = {"num_attention_heads": 1024, "intermediate_size": 1 << 20, "hidden_size": 1 << 16,
                "num_hidden_layers": 1024, "projection_dim": 1 << 16, "max_position_embeddings": 1 << 20,
                "vocab_size": 1 << 24, "image_size": 1 << 16, "patch_size": 1 << 12}
_JSON_TOKENS = re.compile(r'["\\\[\]{}]')


def json_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON text, in one pass (brackets inside strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    last = -2
    for m in _JSON_TOKENS.finditer(text):
        ch, at = m.group(), m.start()
        if in_string:
            if escaped:
                escaped = False
                if at == last + 1:
                    continue  # the character after a backslash
            if ch == "\\":
                escaped, last = True, at
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string, escaped = True, False
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large a number")
    return value


def read_config_json(path: Path) -> dict:
    """A Hugging Face ``config.json``, checked: at most 1 MiB, nested at most 32 deep, an object of objects
    (``text_config``/``vision_config``), no NaN/Infinity, and the size fields the loaders read positive
    integers within bounds. ModelFileError naming the file and the field otherwise."""
    fix = "fix it or remove it (the shapes are read from the weights)"
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ModelFileError(f"{path} is {_human(size)}; a config.json is a few KB (at most "
                                 f"{_human(MAX_CONFIG_BYTES)}): {fix}")
        with open(path, "rb") as f:
            text = f.read(MAX_CONFIG_BYTES + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path} cannot be read ({e}); {fix}") from e
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ModelFileError(f"{path} nests deeper than {MAX_JSON_DEPTH} levels; it is not a model config: {fix}")
    try:
        cfg = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:
        raise ModelFileError(f"{path} is not valid JSON ({e}); {fix}") from e
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{path} holds a JSON {type(cfg).__name__}, not an object of settings; {fix}")
    for name in _CONFIG_SECTIONS:
        if cfg.get(name) is not None and not isinstance(cfg[name], dict):
            raise ModelFileError(f"{path}: {name} is a {type(cfg[name]).__name__}, not an object; {fix}")
    for section in [cfg] + [cfg[n] for n in _CONFIG_SECTIONS if cfg.get(n)]:
        for field, most in _CONFIG_INTS.items():
            value = section.get(field)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise ModelFileError(
                    f"{path}: {field} is {json.dumps(value)[:40]}; it must be a whole number from 1 to {most}: {fix}"
                )
        if section.get("hidden_act") is not None and not isinstance(section["hidden_act"], str):
            raise ModelFileError(f"{path}: hidden_act is {json.dumps(section['hidden_act'])[:40]}, not a name; {fix}")
    return cfg

