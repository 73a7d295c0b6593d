"""Textual-inversion embeddings: find, load (safely) and pick the vectors for each text tower.

Two reference rules (``chunking.tokenize_segments`` calls :class:`EmbeddingResolver` with the rule that
goes with the prompt's weighting syntax):

- ``comfy`` (ComfyUI's rule, ``comfy/sd1_clip.py`` ``SDTokenizer``): ``embedding:name`` (extension
  optional, subfolders of the embeddings folders searched, a trailing comma tolerated). A missing
  embedding is dropped with a warning, as ComfyUI drops it.
- ``a1111`` (A1111's ``EmbeddingDatabase``): a bare word whose tokens equal the tokens of an embedding's
  file name (without extension); the longest name wins.

File layouts: A1111 ``.pt`` (``string_to_param``), kohya/SD1 ``.safetensors`` (``emb_params``), SDXL
(``clip_l`` and ``clip_g`` tensors), diffusers ``.bin`` (``{"<token>": tensor}``), bundled LoRA embeddings
(``bundle_emb.*``). Pickles load with ``weights_only=True`` only: code in a file never runs.
A tower takes the tensor named for it (``clip_l``/``clip_g``/``clip_h``), else the file's only/first one;
a tensor whose width does not match the tower is ignored with a warning (ComfyUI does the same).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from .chunking import PromptToken, unknown_embedding_comfy
from ..folders import walk_once
from ..weights.files import ModelFileError, torch_load_weights_only

log = logging.getLogger(__name__)

EXTENSIONS = (".safetensors", ".pt", ".bin")
_TOWER_KEYS = {"l": "clip_l", "g": "clip_g", "h": "clip_h"}


@dataclass(eq=False)
class TowerEmbedding:
    """The vectors one tower uses for an embedding: (n, C). ``vectors is None`` when the width is wrong."""

    name: str
    key: str  # stable identity for caches: file, size, mtime, tower
    vectors: torch.Tensor | None
    length: int  # vectors the reference occupies in a chunk (also when ignored for a width mismatch)
    note: str = ""  # why it is ignored (``vectors is None``)


class EmbeddingFile:
    """One embedding file's tensors, loaded once."""

    def __init__(self, path: Path):
        self.path = path
        self.name = path.stem
        self.tensors = _read_embedding(path)  # first: it refuses what stat/resolve would choke on
        try:
            st = path.stat()
            self.key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        except (OSError, RuntimeError) as e:  # removed since, or a link loop (RuntimeError from resolve)
            raise ModelFileError(f"embedding {path} cannot be read ({e})") from e

    def for_tower(self, tower: str, width: int | None) -> TowerEmbedding:
        t = self.tensors.get(_TOWER_KEYS.get(tower, ""))
        if t is None:
            t = next(iter(self.tensors.values()))
        t = t.reshape(-1, t.shape[-1])
        if width is not None and t.shape[-1] != width:
            note = (
                f"embedding {self.name} ({self.path}) has width {t.shape[-1]}; this {width}-wide text encoder "
                "cannot use it, so it is ignored (an embedding made for another model?)"
            )
            log.warning(note)
            return TowerEmbedding(self.name, f"{self.key}:{tower}", None, t.shape[0], note)
        return TowerEmbedding(self.name, f"{self.key}:{tower}", t, t.shape[0])


MAX_EMBEDDING_BYTES = 256 * 2**20  # far above any real embedding (SDXL: a few hundred KB)


def _read_embedding(path: Path) -> dict[str, torch.Tensor]:
    """Name -> float32 tensor table of an embedding file (the tensor layouts of the module docstring).

    Every way a file can be wrong is a :class:`ModelFileError` naming it: not a regular file (a FIFO, a
    device, a link to one), empty, too large, not loadable, no usable tensor, empty or non-finite tensors.
    """
    import stat

    try:
        st = path.stat()
    except OSError as e:  # a broken link, a link loop, no permission
        raise ModelFileError(f"embedding {path} cannot be read ({e.strerror or e})") from e
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"embedding {path} is not a regular file (a device, pipe or socket, or a link to one)")
    if st.st_size == 0:
        raise ModelFileError(f"embedding {path} is empty (0 bytes)")
    if st.st_size > MAX_EMBEDDING_BYTES:
        raise ModelFileError(
            f"embedding {path} is {st.st_size / 2**20:.0f} MB; an embedding is a few KB to a few MB "
            f"(limit {MAX_EMBEDDING_BYTES // 2**20} MB): not an embedding file"
        )
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
            raise ModelFileError(f"embedding {path} is not a valid .safetensors file ({e})") from e
    else:
        raw = _read_pickled_embedding(path)
    tensors = {
        k: v for k, v in raw.items()
        if isinstance(k, str) and isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() in (1, 2)
    }  # fmt: skip
    bundled = {k: v for k, v in tensors.items() if k.startswith("bundle_emb.")}
    if bundled:  # a LoRA with bundled embeddings: keep the string_to_param/clip_* parts
        tensors = {k.rsplit(".", 1)[-1] if k.endswith(tuple(_TOWER_KEYS.values())) else "*": v for k, v in bundled.items()}
    if not tensors:
        raise ModelFileError(f"embedding {path} holds no embedding vectors (no 1-D or 2-D float tensor)")
    out = {}
    for name, t in tensors.items():
        if t.numel() == 0:
            raise ModelFileError(f"embedding {path}: tensor {name} is empty (shape {tuple(t.shape)})")
        # float8 and other storage dtypes have no isfinite: compare in float32, the dtype used from here on.
        t = t.to(torch.float32)
        if not bool(torch.isfinite(t).all()):
            raise ModelFileError(f"embedding {path}: tensor {name} holds NaN or infinite values")
        out[name] = t
    return out


def _read_pickled_embedding(path: Path) -> dict:
    import pickle

    try:
        obj = torch_load_weights_only(path)
    except pickle.UnpicklingError as e:
        raise ModelFileError(
            f"embedding {path} contains objects other than weights (a pickle that would run code) or is not a "
            "torch file; refused. Use a .safetensors embedding"
        ) from e
    # torch.load raises many types on malformed input (KeyError, IndexError, RuntimeError, ...): each one
    # means this file is not a readable embedding, which is reported against the file.
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(f"embedding {path} cannot be read ({type(e).__name__}: {e})") from e
    if isinstance(obj, dict) and "string_to_param" in obj:
        params = obj["string_to_param"]
        first = next(iter(params.values()), None) if isinstance(params, dict) else None
        if first is None:
            raise ModelFileError(f"embedding {path}: its string_to_param table is empty or not a table")
        return {"*": first}
    if isinstance(obj, dict):
        return obj
    raise ModelFileError(f"embedding {path} holds a {type(obj).__name__}, not embedding vectors")


def folder_state(folders) -> tuple:
    """A cheap fingerprint of embedding folders: every embedding file's path, size and mtime.

    Two equal fingerprints mean a library built earlier still describes the folders (a host compares
    them before each use; a folder of a few hundred files takes a few milliseconds to scan).
    """
    state = []
    for folder in folders:
        folder = Path(folder)
        files = []
        if folder.is_dir():
            for root, _, names in walk_once(folder):
                for name in names:
                    if name.lower().endswith(EXTENSIONS):
                        try:
                            st = os.stat(os.path.join(root, name))
                        except OSError:  # removed while we looked, or a broken link
                            continue
                        files.append((os.path.join(root, name), st.st_size, st.st_mtime_ns))
        state.append((str(folder), tuple(sorted(files))))
    return tuple(state)


class EmbeddingLibrary:
    """The embeddings found in one or more folders (subfolders included), loaded on first use."""

    def __init__(self, folders):
        self.requested = tuple(str(f) for f in folders if f)
        self.folders = [Path(f) for f in self.requested if Path(f).is_dir()]
        self.state = folder_state(self.requested)
        self._files: dict[Path, EmbeddingFile | ModelFileError] = {}
        self._lock = threading.Lock()
        self._names: dict[str, Path] | None = None

    def is_current(self, folders) -> bool:
        """Whether this library was built from ``folders`` and no embedding file was added, removed or changed."""
        folders = tuple(str(f) for f in folders if f)
        return folders == self.requested and folder_state(folders) == self.state

    # ------------------------------------------------------------------------ lookup
    def find(self, name: str) -> Path | None:
        """ComfyUI's lookup: ``name`` (maybe with a subfolder and extension) inside one of the folders."""
        for folder in self._all_folders():
            # A lexical check, as ComfyUI's: the name may not climb out of the folder ("../../secret"),
            # while links inside it are followed wherever they point (reading them then says what they are).
            root = os.path.abspath(folder)
            candidate = os.path.normpath(os.path.join(root, name))
            if os.path.commonpath([root, candidate]) != root or candidate == root:
                continue
            for path in [candidate] + [candidate + ext for ext in EXTENSIONS]:
                if os.path.lexists(path) and not os.path.isdir(path):
                    return Path(path)
        return None

    def _all_folders(self) -> list[Path]:
        out = []
        for folder in self.folders:
            out.append(folder)
            out += sorted(Path(root) for root, _, _ in walk_once(folder) if Path(root) != folder)
        return out

    def names(self) -> dict[str, Path]:
        """File stem -> path for every embedding file (A1111 looks embeddings up by file name)."""
        if self._names is None:
            found = {}
            for folder in self.folders:
                for root, _, files in walk_once(folder):
                    for f in sorted(files):
                        p = Path(root) / f
                        if p.suffix.lower() in EXTENSIONS:
                            found.setdefault(p.stem, p)
            self._names = found
        return self._names

    def load(self, path: Path) -> EmbeddingFile:
        """The file's tensors, read once; a file that cannot be read raises the same ModelFileError each time
        (it is not read again until the library is rebuilt, i.e. until the folder changes)."""
        with self._lock:
            if path not in self._files:
                try:
                    self._files[path] = EmbeddingFile(path)
                except ModelFileError as e:
                    self._files[path] = e
            found = self._files[path]
        if isinstance(found, ModelFileError):
            raise ModelFileError(str(found))  # a new exception: re-raising one object would grow its traceback
        return found

    # ------------------------------------------------------------------------ resolvers
    def resolver(self, tower: str, syntax: str = "comfy", width: int | None = None) -> "EmbeddingResolver":
        """A ``resolve_embedding`` callable for :func:`chunking.chunk_prompt`, for one tower (``width``: its
        width; vectors of another width are left out with a warning).

        The chunker names the rule with each call (ComfyUI's ``embedding:name`` or A1111's bare names; it
        follows the weighting syntax), so one resolver serves both and ``syntax`` does not restrict it.
        """
        return EmbeddingResolver(self, tower, width)


class EmbeddingResolver:
    """Turns embedding references into vectors for one tower, by ComfyUI's or A1111's rule; collects the
    warnings met (missing, unreadable or misfit files) in :attr:`warnings` for the node's status."""

    def __init__(self, library: EmbeddingLibrary, tower: str, width: int | None):
        self.library, self.tower, self.width = library, tower, width
        self.warnings: list[str] = []
        self._by_first: dict[int, list] | None = None

    def __call__(self, reference, mode: str = "comfy"):
        """comfy: ``reference`` is the text after ``embedding:`` -> (TowerEmbedding or None, leftover text).
        a1111: ``reference`` is a list of PromptTokens -> the list with embedding names replaced."""
        return self._a1111(reference) if mode == "a1111" else self._comfy(reference)

    def _note(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def _load(self, path: Path) -> TowerEmbedding | None:
        """The file's vectors for this tower; None (with a warning) when the file cannot be read."""
        try:
            emb = self.library.load(path).for_tower(self.tower, self.width)
        except ModelFileError as e:
            message = f"{e}; the reference is ignored"
            if message not in self.warnings:
                log.warning(message)
            self._note(message)
            return None
        if emb.vectors is None:
            self._note(emb.note)
        return emb

    # ------------------------------------------------------------------------ ComfyUI's rule
    def _get(self, name: str):
        path = self.library.find(name)
        return None if path is None else self._load(path)

    def _comfy(self, text: str):
        """``embedding:name rest`` -> (TowerEmbedding or None, leftover text), ComfyUI's rule."""
        words = text.strip("\n").split()
        if words:
            emb = self._get(words[0])
            if emb is not None:
                return emb, " ".join(words[1:])
            stripped = words[0].strip(",")
            if stripped and len(stripped) < len(words[0]):
                emb = self._get(stripped)
                if emb is not None:
                    return emb, f"{words[0][len(stripped):]} {' '.join(words[1:])}"
            if self.library.find(words[0]) is not None or (stripped and self.library.find(stripped)):
                return unknown_embedding_comfy(text, warn=False)  # found but unusable: already said why
            where = ", ".join(str(f) for f in self.library.folders) or "no embeddings folder"
            self._note(f"embedding:{words[0]} is not in the embeddings folders ({where}); left out, as ComfyUI does")
        return unknown_embedding_comfy(text)

    # ------------------------------------------------------------------------ A1111's rule
    def _names_by_first_token(self) -> dict[int, list]:
        """First token id -> [(token ids of a file name, path)], longest names first (built on first use)."""
        if self._by_first is None:
            from ..tokenizer import get_tokenizer

            by_first: dict[int, list] = {}
            tok = get_tokenizer()
            for name, path in self.library.names().items():
                ids = tok.encode(name)
                if ids:
                    by_first.setdefault(ids[0], []).append((ids, path))
            for options in by_first.values():
                options.sort(key=lambda o: -len(o[0]))
            self._by_first = by_first
        return self._by_first

    def _a1111(self, tokens):
        """Replace token runs that spell an embedding's file name by its vectors (A1111's rule)."""
        by_first = self._names_by_first_token()
        out, i = [], 0
        while i < len(tokens):
            tok = tokens[i]
            for ids, path in by_first.get(tok.id, ()):
                if [t.id for t in tokens[i : i + len(ids)]] == ids:
                    emb = self._load(path)
                    if emb is None or emb.vectors is None:  # A1111 only registers embeddings that fit:
                        out.append(tok)  # the word stays text (and the scan moves on: no endless retry)
                        i += 1
                        break
                    out += [PromptToken(0, tok.weight, emb, k) for k in range(emb.length)]
                    i += len(ids)
                    break
            else:
                out.append(tok)
                i += 1
        return out
