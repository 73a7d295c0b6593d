"""Small files that claim big tensors, for the tests of weight and head loading (issue 26, point 4).

Each is a few KB to a few MB on disk and would take hundreds of MB or more if a reader believed it:

- :func:`deflated_torch_zip`: a ``torch.save`` zip whose ``data/0`` entry is deflated (``torch.save`` never
  compresses; miniz, torch's zip reader, inflates it all), holding a float32 tensor of ``numel`` zeros.
- :func:`expanded_torch_zip`: a one-element storage viewed as ``shape`` with zero strides (no data, but
  any computation on it materialises the whole shape).
- :func:`sparse_torch_zip`: a ``torch.save``-style zip whose claimed tensors are holes beside real ones.
- :func:`sparse_safetensors`: a ``.safetensors`` file whose claimed tensors are holes (a sparse file: its
  apparent size is what it claims, its disk use none), beside real ones.

The zips are written the way ``torch.save`` writes them (``archive/data.pkl`` with persistent ids
``('storage', torch.FloatStorage, key, 'cpu', numel)`` and ``torch._utils._rebuild_tensor_v2``), so
``torch.load(weights_only=True)`` reads them as it reads a real checkpoint.
"""

from __future__ import annotations

import collections
import io
import json
import math
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import torch


class _Storage:
    def __init__(self, key: str, numel: int):
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage: _Storage, shape: tuple, stride: tuple):
        self.storage, self.shape, self.stride = storage, shape, stride

    def __reduce_ex__(self, protocol):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, self.shape, self.stride, False, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def _data_pkl(tensors: dict) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(tensors)
    return buf.getvalue()


def _write_zip(path: Path, pkl: bytes, storages: dict[str, int], deflate: bool) -> Path:
    """``storages``: key -> byte count of zeros."""
    kind = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for key, nbytes in storages.items():
            info = zipfile.ZipInfo(f"archive/data/{key}")
            info.compress_type = kind
            with z.open(info, "w", force_zip64=nbytes > 2**31) as out:
                chunk = bytes(1 << 20)
                left = nbytes
                while left:
                    out.write(chunk[: min(left, len(chunk))])
                    left -= min(left, len(chunk))
        z.writestr("archive/version", "3\n")
    return path


def deflated_torch_zip(path, numel: int, key: str = "weight", bias: bool = True) -> Path:
    """``{key: zeros(1, numel)}`` (+ ``bias`` zeros(1)) with the big storage deflated: ~numel/256 bytes on disk."""
    big = _Storage("0", numel)
    tensors = {key: _Tensor(big, (1, numel), (numel, 1))}
    storages = {"0": 4 * numel}
    if bias:
        tensors["bias"] = _Tensor(_Storage("1", 1), (1,), (1,))
        storages["1"] = 4
    return _write_zip(Path(path), _data_pkl(tensors), storages, deflate=True)


def list_bomb_torch_zip(path, lists: int) -> Path:
    """A zip checkpoint whose data.pkl is ``lists`` empty lists in one list (2 bytes each in the pickle,
    a 56-byte object each once unpickled)."""
    pkl = b"\x80\x02]" + b"]a" * lists + b"."
    return _write_zip(Path(path), pkl, {}, deflate=False)


def list_bomb_pickle(path, lists: int) -> Path:
    """The same list of ``lists`` empty lists as a plain pickle (what torch.load reads as a legacy file)."""
    path = Path(path)
    path.write_bytes(b"\x80\x02]" + b"]a" * lists + b".")
    return path


def expanded_torch_zip(path, shape: tuple, key: str = "weight", bias: bool = True) -> Path:
    """``{key: one float viewed as shape}`` with all strides 0 (+ ``bias`` zeros(shape[0]) viewed the same)."""
    one = _Storage("0", 1)
    tensors = {key: _Tensor(one, tuple(shape), (0,) * len(shape))}
    if bias:
        tensors["bias"] = _Tensor(one, (shape[0],), (0,))
    return _write_zip(Path(path), _data_pkl(tensors), {"0": 4}, deflate=False)


def sparse_torch_zip(path, holes: dict, tensors: dict) -> Path:
    """A ``torch.save``-style zip (entries stored) of ``tensors`` (name -> float32 tensor, stored for real)
    and ``holes`` (name -> shape: float32 zeros that are holes on disk, so the file's apparent size is what
    they claim). Written by hand: zipfile cannot leave holes."""
    storages, table, blobs = {}, {}, {}
    for i, (name, shape) in enumerate(holes.items()):
        numel = math.prod(shape)
        storages[str(i)] = 4 * numel
        table[name] = _Tensor(_Storage(str(i), numel), tuple(shape), _contiguous_strides(shape))
    for j, (name, t) in enumerate(tensors.items(), start=len(holes)):
        t = t.detach().float().contiguous()
        blobs[str(j)] = t.numpy().tobytes()
        table[name] = _Tensor(_Storage(str(j), t.numel()), tuple(t.shape), _contiguous_strides(t.shape))
    entries = [("archive/data.pkl", _data_pkl(table)), ("archive/byteorder", b"little")]
    entries += [(f"archive/data/{k}", n) for k, n in storages.items()]
    entries += [(f"archive/data/{k}", b) for k, b in blobs.items()] + [("archive/version", b"3\n")]
    path = Path(path)
    central = []
    with open(path, "wb") as f:
        for name, data in entries:
            size = data if isinstance(data, int) else len(data)
            crc = _zeros_crc(size) if isinstance(data, int) else zlib.crc32(data)
            offset = f.tell()
            raw = name.encode()
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, crc, size, size, len(raw), 0) + raw)
            if isinstance(data, int):
                f.seek(size, 1)
            else:
                f.write(data)
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, crc, size, size,
                                       len(raw), 0, 0, 0, 0, 0, offset) + raw)
        start = f.tell()
        for record in central:
            f.write(record)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), f.tell() - start, start, 0))
    return path


def _contiguous_strides(shape) -> tuple:
    strides, step = [], 1
    for d in reversed(tuple(shape)):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


def _zeros_crc(n: int) -> int:
    crc, chunk = 0, bytes(1 << 20)
    while n:
        crc = zlib.crc32(chunk[: min(n, len(chunk))], crc)
        n -= min(n, len(chunk))
    return crc


def sparse_safetensors(path, holes: dict, tensors: dict | None = None) -> Path:
    """A ``.safetensors`` file whose ``holes`` (name -> (dtype, shape)) are holes on disk (a sparse file: its
    apparent size is what they claim, its disk use none), then ``tensors`` (name -> tensor) stored for real."""
    header: dict = {}
    offset = 0
    for name, (dtype, shape) in holes.items():
        nbytes = _ITEMSIZE[dtype] * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hole_end = offset
    blobs = []
    for name, t in (tensors or {}).items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path = Path(path)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.seek(hole_end, 1)
        for raw in blobs:
            f.write(raw)
        f.truncate()
    return path


_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "F8_E4M3": 1, "I64": 8, "I32": 4, "BOOL": 1}
_DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL"}
