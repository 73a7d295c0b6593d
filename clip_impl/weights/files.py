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

_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_SUBFOLDERS = ("text_encoder", "text_encoder_2", "image_encoder")


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and what to do."""


class WeightReader:
    """Lazy access to the tensors of one file or folder: ``shapes`` first, ``read(keys)`` on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = self.path.name
        self.configs: dict[str, dict] = {}  # prefix -> config.json of that part (folders only)
        self._parts: list[tuple[str, Path]] = []  # (key prefix, file)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._where: dict[str, tuple[str, Path]] = {}
        self._pickles: dict[Path, dict] = {}
        if not self.path.exists():
            raise ModelFileError(f"{self.path} does not exist")
        if self.path.is_dir():
            self._scan_folder()
        else:
            self._parts = [("", self.path)]
        for prefix, file in self._parts:
            for key, shape in self._file_shapes(file).items():
                self.shapes[prefix + key] = shape
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
                try:
                    self.configs[prefix] = json.loads(cfg.read_text())
                except (OSError, ValueError) as e:
                    raise ModelFileError(f"{cfg} is not valid JSON ({e}); restore it or remove it") from e
        if not self._parts:
            raise ModelFileError(
                f"{self.path} is a folder without model weights: expected a diffusers folder "
                "(text_encoder/, text_encoder_2/) or a Hugging Face folder with model.safetensors"
            )

    def _file_shapes(self, file: Path) -> dict[str, tuple[int, ...]]:
        size = file.stat().st_size
        if size == 0:
            raise ModelFileError(f"{file} is empty (0 bytes): the download or copy did not finish; get it again")
        if file.suffix.lower() == ".safetensors":
            return _safetensors_shapes(file, size)
        if file.suffix.lower() in _PICKLE_SUFFIXES:
            tensors = self._load_pickle(file)
            return {k: tuple(v.shape) for k, v in tensors.items()}
        raise ModelFileError(
            f"{file}: unknown file type {file.suffix!r}; use .safetensors (or .ckpt/.pt/.pth/.bin checkpoints)"
        )

    def _load_pickle(self, file: Path) -> dict:
        if file not in self._pickles:
            self._pickles[file] = load_pickle_weights(file)
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
        (a load reads only what it needs now), a pickled file's tensor is taken now (the file is in memory;
        keeping the reader for later would keep all of it)."""
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


def _weight_files_in(folder: Path) -> list[Path]:
    names = sorted(p for p in folder.iterdir() if p.is_file())
    safet = [p for p in names if p.suffix == ".safetensors"]
    # Prefer full-precision files over ".fp16." variants when both exist, as diffusers does.
    full = [p for p in safet if ".fp16." not in p.name]
    if safet:
        return full or safet
    return [p for p in names if p.suffix in (".bin", ".pt", ".pth") and p.name != "training_args.bin"]


def _safetensors_shapes(file: Path, size: int) -> dict[str, tuple[int, ...]]:
    header = _safetensors_header(file, size)
    shapes = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(info, dict) or "shape" not in info or "data_offsets" not in info:
            raise ModelFileError(f"{file}: tensor {key!r} has a malformed header entry; the file is corrupt")
        shapes[key] = tuple(int(d) for d in info["shape"])
    return shapes


def _safetensors_header(file: Path, size: int) -> dict:
    """Parse and check the header ourselves, so bad files get a clear message before safetensors runs."""
    bad = f"{file} is not a valid .safetensors file"
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{bad} (only {len(head)} bytes): the download did not finish; get it again")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > min(size - 8, 100 * 1024 * 1024):
            raise ModelFileError(f"{bad} (header size {n} does not fit the {size}-byte file): it is truncated or not a model")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, ValueError) as e:
            raise ModelFileError(f"{bad} (header is not JSON: {e}): it is corrupt or not a model") from e
    if not isinstance(header, dict):
        raise ModelFileError(f"{bad} (header is not a table of tensors)")
    for key, info in header.items():
        if key == "__metadata__" or not isinstance(info, dict):
            continue
        _check_entry(file, key, info)
    data_size = size - 8 - n
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v), default=0)
    if end > data_size:
        raise ModelFileError(
            f"{file} is truncated: its header lists {end} bytes of tensors but only {data_size} follow; "
            "the download or copy did not finish; get it again"
        )
    return header


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def _check_entry(file: Path, key: str, info: dict) -> None:
    """A tensor's byte span must equal its shape times its dtype size (a lying header is corruption)."""
    try:
        begin, end = (int(x) for x in info["data_offsets"])
        count = 1
        for d in info["shape"]:
            count *= int(d)
        size = _DTYPE_BYTES.get(info["dtype"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{file}: tensor {key!r} has a malformed header entry ({e}); the file is corrupt") from e
    if size is not None and end - begin != count * size:
        raise ModelFileError(
            f"{file}: the header says tensor {key!r} is {info['dtype']} {list(info['shape'])} "
            f"({count * size} bytes) but gives it {end - begin} bytes; the file is corrupt: get it again"
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


def torch_load_weights_only(file) -> object:
    """``torch.load(weights_only=True)`` on the CPU, without torch's pickle-protocol chatter."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(str(file), map_location="cpu", weights_only=True)


def load_pickle_weights(file: Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor table from a pickled checkpoint, loaded with ``weights_only=True``."""
    import pickle

    try:
        obj = torch_load_weights_only(file)
    except pickle.UnpicklingError as e:
        raise ModelFileError(
            f"{file} contains objects other than weights (a pickle that would run code); refused to load it. "
            "Use a .safetensors version of this model"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        raise ModelFileError(f"{file} cannot be read as a checkpoint ({e}); it is truncated or not a model") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelFileError(f"{file} holds a {type(obj).__name__}, not a table of weights")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
