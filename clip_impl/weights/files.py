"""Read tensors from model files and folders, only the keys asked for, and never run code from them.

- ``.safetensors``: ``safe_open``; the header gives names and shapes, tensors are read one by one.
- ``.ckpt``/``.pt``/``.pth``/``.bin``: ``torch.load(weights_only=True)``, which refuses pickles that
  would build anything but tensors and plain containers (so a malicious pickle cannot run code).
- A folder: diffusers (``text_encoder/``, ``text_encoder_2/``, ``image_encoder/``) or Hugging Face
  (``model.safetensors`` or ``pytorch_model.bin``, sharded or not, next to ``config.json``).
  Keys from a diffusers subfolder get the subfolder name as prefix (``text_encoder_2.text_model...``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .file_checks import (
    DTYPE_BYTES, MODEL_FILE, FileKind, ModelFileError, check_file_size, check_header_tensors, check_loaded_tensors,
    check_legacy_pickle, check_zip_listing, float_problem, is_zip_checkpoint, read_config_json, tensor_dtype_name,
)

_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_SUBFOLDERS = ("text_encoder", "text_encoder_2", "image_encoder")


class WeightReader:
    """Lazy access to the tensors of one file or folder: ``shapes`` first, ``read(keys)`` on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = self.path.name
        self.configs: dict[str, dict] = {}  # prefix -> config.json of that part (folders only)
        self.config_files: dict[str, Path] = {}  # prefix -> that config.json's path
        self._parts: list[tuple[str, Path]] = []  # (key prefix, file)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, str] = {}  # key -> dtype as a safetensors name ("F16"), or why it is no weight
        self._where: dict[str, tuple[str, Path]] = {}
        self._pickles: dict[Path, dict] = {}
        if not self.path.exists():
            raise ModelFileError(f"{self.path} does not exist")
        if self.path.is_dir():
            self._scan_folder()
        else:
            self._parts = [("", self.path)]
        for prefix, file in self._parts:
            for key, (dtype, shape) in self._file_entries(file).items():
                self.shapes[prefix + key] = shape
                self.dtypes[prefix + key] = dtype
                self._where[prefix + key] = (prefix, file)

    # -------------------------------------------------------------------------------- discovery
    def _scan_folder(self) -> None:
        subs = [s for s in _SUBFOLDERS if (self.path / s).is_dir()]
        roots = [(s + ".", self.path / s) for s in subs] or [("", self.path)]
        for prefix, folder in roots:
            files = _weight_files_in(folder)
            if not files:
                continue
            self._parts += [(prefix, f) for f in files]
            cfg = folder / "config.json"
            if cfg.is_file():
                self.configs[prefix] = read_config_json(cfg)
                self.config_files[prefix] = cfg
        if not self._parts:
            raise ModelFileError(
                f"{self.path} is a folder without model weights: expected a diffusers folder "
                "(text_encoder/, text_encoder_2/) or a Hugging Face folder with model.safetensors"
            )

    def _file_entries(self, file: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
        """key -> (dtype name, shape) of every tensor in ``file``, from its header (or its loaded pickle)."""
        size = file.stat().st_size
        if size == 0:
            raise ModelFileError(f"{file} is empty (0 bytes): the download or copy did not finish; get it again")
        if file.suffix.lower() == ".safetensors":
            return safetensors_entries(file, size)
        if file.suffix.lower() in _PICKLE_SUFFIXES:
            tensors = self._load_pickle(file)
            return {k: (tensor_dtype_name(v), tuple(v.shape)) for k, v in tensors.items()}
        raise ModelFileError(
            f"{file}: unknown file type {file.suffix!r}; use .safetensors (or .ckpt/.pt/.pth/.bin checkpoints)"
        )

    def _load_pickle(self, file: Path) -> dict:
        # Mapped, not read (a torch.save zip): the towers' shapes are checked before their bytes are read,
        # and an SD checkpoint's UNet is never read at all.
        if file not in self._pickles:
            self._pickles[file] = load_pickle_weights(file, mmap=True)
        return self._pickles[file]

    # -------------------------------------------------------------------------------- reading
    def read(self, keys) -> dict[str, torch.Tensor]:
        """The tensors for ``keys`` (full keys as in :attr:`shapes`), on the CPU."""
        out: dict[str, torch.Tensor] = {}
        by_file: dict[Path, list[str]] = {}
        for key in keys:
            by_file.setdefault(self._where[key][1], []).append(key)
        for file, wanted in by_file.items():
            prefix = self._where[wanted[0]][0]
            if file.suffix.lower() == ".safetensors":
                out.update(_read_safetensors(file, wanted, prefix))
            else:
                tensors = self._load_pickle(file)
                out.update({k: tensors[k[len(prefix) :]] for k in wanted})
        return out

    def deferred(self, key: str):
        """A callable that returns the tensor ``key`` when called: a safetensors file is opened again then
        (a load reads only what it needs now), a pickled file's tensor is taken now (keeping the reader for
        later would keep all of the file's tensors: in memory for a legacy pickle)."""
        prefix, file = self._where[key]
        if file.suffix.lower() == ".safetensors":
            return lambda: _read_safetensors(file, [key], prefix)[key]
        tensor = self.read([key])[key]
        return lambda: tensor

    def config_for(self, key_prefix: str) -> dict:
        """config.json of the folder part whose prefix starts ``key_prefix`` ({} if none)."""
        for prefix, cfg in self.configs.items():
            if key_prefix.startswith(prefix):
                return cfg
        return {}

    def config_file_for(self, key_prefix: str) -> Path | None:
        """The path of :meth:`config_for`'s config.json (None if none)."""
        for prefix, path in self.config_files.items():
            if key_prefix.startswith(prefix):
                return path
        return None


def _weight_files_in(folder: Path) -> list[Path]:
    names = sorted(p for p in folder.iterdir() if p.is_file())
    safet = [p for p in names if p.suffix == ".safetensors"]
    # Prefer full-precision files over ".fp16." variants when both exist, as diffusers does.
    full = [p for p in safet if ".fp16." not in p.name]
    if safet:
        return full or safet
    return [p for p in names if p.suffix in (".bin", ".pt", ".pth") and p.name != "training_args.bin"]


def safetensors_entries(file: Path, size: int, kind: FileKind = MODEL_FILE) -> dict[str, tuple[str, tuple[int, ...]]]:
    """key -> (dtype name, shape) from a checked ``.safetensors`` header (no tensor data is read)."""
    header = _safetensors_header(file, size, kind)
    return {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items() if k != "__metadata__"}


def _safetensors_header(file: Path, size: int, kind: FileKind = MODEL_FILE) -> dict:
    """Parse and check the header ourselves, so bad files get a clear message before safetensors runs: at
    most ``kind.max_header_bytes``, every entry a dtype, a shape of whole numbers and a byte span that
    holds exactly that shape within the file."""
    bad = f"{file} is not a valid .safetensors file"
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{bad} (only {len(head)} bytes): the download did not finish; get it again")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > size - 8:
            raise ModelFileError(f"{bad} (header size {n} does not fit the {size}-byte file): it is truncated or not a model")
        if n > kind.max_header_bytes:
            raise ModelFileError(
                f"{bad} (a {n}-byte header; {kind.a_name} has at most {kind.max_header_bytes}): it is corrupt or "
                f"not {kind.a_name}"
            )
        raw = f.read(n)
        values = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
        if values > kind.max_header_values:
            raise ModelFileError(
                f"{bad} (its header lists about {values} values; {kind.a_name} has at most "
                f"{kind.max_header_values}): it is corrupt or not {kind.a_name}"
            )
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ModelFileError(f"{bad} (header is not JSON: {e}): it is corrupt or not a model") from e
    if not isinstance(header, dict):
        raise ModelFileError(f"{bad} (header is not a table of tensors)")
    data_size = size - 8 - n
    for key, info in header.items():
        if key == "__metadata__":
            continue
        _check_entry(file, key, info, data_size)
    return header


def _check_entry(file: Path, key: str, info, data_size: int) -> None:
    """A tensor's byte span lies in the file and equals its shape times its dtype size (a lying header is
    corruption); a dtype of unknown size still needs a bit per element."""
    malformed = f"{file}: tensor {key!r} has a malformed header entry"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise ModelFileError(f"{malformed} (it needs dtype, shape and data_offsets); the file is corrupt")
    shape, offsets, dtype = info["shape"], info["data_offsets"], info["dtype"]
    whole = [isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in (shape or [])]
    if not isinstance(shape, list) or not all(whole) or not isinstance(dtype, str):
        raise ModelFileError(f"{malformed} (shape {str(shape)[:60]}, dtype {str(dtype)[:20]}); the file is corrupt")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(x, int) for x in offsets)):
        raise ModelFileError(f"{malformed} (data_offsets {str(offsets)[:60]}); the file is corrupt")
    begin, end = offsets
    count = 1
    for d in shape:
        count *= d
    if not 0 <= begin <= end:
        raise ModelFileError(f"{malformed} (data_offsets {offsets}); the file is corrupt")
    if end > data_size:
        raise ModelFileError(
            f"{file} is truncated: its header lists {end} bytes of tensors but only {data_size} follow; "
            "the download or copy did not finish; get it again"
        )
    size = DTYPE_BYTES.get(dtype)
    if (size is not None and end - begin != count * size) or (size is None and count > 8 * (end - begin)):
        raise ModelFileError(
            f"{file}: the header says tensor {key!r} is {dtype} {shape} "
            + (f"({count * size} bytes) " if size is not None else "")
            + f"but gives it {end - begin} bytes; the file is corrupt: get it again"
        )


def _read_safetensors(file: Path, keys: list[str], prefix: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    out = {}
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in keys:
                out[key] = f.get_tensor(key[len(prefix) :])
    except (SafetensorError, RuntimeError, ValueError) as e:
        raise ModelFileError(f"{file}: cannot read tensors ({e}); the file is corrupt; get it again") from e
    return out


def load_safetensors_weights(file: Path, kind: FileKind) -> dict[str, torch.Tensor]:
    """Every tensor of a small ``.safetensors`` file of ``kind`` (an aesthetic head): the file's size, its
    header's tensor count, shapes and dtypes are checked first, then the tensors are read."""
    size = file.stat().st_size
    check_file_size(file, size, kind)
    entries = safetensors_entries(file, size, kind)
    for key, (dtype, _) in entries.items():
        problem = float_problem(dtype, kind)
        if problem:
            raise ModelFileError(f"{file}: tensor {key!r} {problem}; this is not a usable {kind.name}")
    check_header_tensors(file, entries, kind)
    return _read_safetensors(file, list(entries), "")


def torch_load_weights_only(file, kind: FileKind = MODEL_FILE, mmap: bool = False) -> object:
    """``torch.load(weights_only=True)`` on the CPU, without torch's pickle-protocol chatter. The file's
    size and, for a zip checkpoint, what its entries unpack to are checked against ``kind`` first (torch
    inflates every entry before anything else could look at it). With ``mmap``, a zip whose entries are
    stored (every ``torch.save`` file) is mapped, not read: a tensor's bytes are read when first used, so a
    loader that checks the claimed shapes first reads only what it keeps."""
    import warnings

    file = Path(file)
    size = file.stat().st_size
    check_file_size(file, size, kind)
    mappable = check_zip_listing(file, size, kind)
    if not is_zip_checkpoint(file):
        check_legacy_pickle(file, kind)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(str(file), map_location="cpu", weights_only=True, mmap=mmap and mappable)


def load_pickle_weights(file: Path, kind: FileKind = MODEL_FILE, mmap: bool = False) -> dict[str, torch.Tensor]:
    """A flat name -> tensor table from a pickled checkpoint, loaded with ``weights_only=True`` after the
    checks of :func:`torch_load_weights_only` (``mmap``: see there); for a kind with tensor limits (a
    head), the tensors' dtypes and claimed shapes are checked before anything computes on them."""
    import pickle

    try:
        obj = torch_load_weights_only(file, kind, mmap)
    except ModelFileError:
        raise
    except pickle.UnpicklingError as e:
        raise ModelFileError(
            f"{file} contains objects other than weights (a pickle that would run code); refused to load it. "
            "Use a .safetensors version of this model"
        ) from e
    # torch.load raises many types on malformed input (KeyError, IndexError, TypeError, RuntimeError, ...):
    # each one means this file is not a readable checkpoint, which is reported against the file.
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(
            f"{file} cannot be read as a checkpoint ({type(e).__name__}: {_one_line(e)}); it is truncated or "
            "not a model"
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelFileError(f"{file} holds a {type(obj).__name__}, not a table of weights")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if kind.max_elements is not None:
        check_loaded_tensors(file, tensors, kind)
    return tensors


def _one_line(e: BaseException) -> str:
    """An exception's message on one line, at most 300 characters (torch's can span many)."""
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."
