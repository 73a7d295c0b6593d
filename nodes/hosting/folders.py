"""What both hosts share: ``folder/name`` model choices, embeddings, the chunk cache view, derived models.

Subclasses give ``search_paths``/``folder_files`` and the device, load and prepare methods of
:class:`~.interface.Host`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from ...clip_impl.cache import CHUNK_CACHE, ByteLRUCache
from ...clip_impl.text import EmbeddingLibrary
from ...clip_impl.folders import walk_once
from ...clip_impl.model import ClipModel
from .interface import DEVICES, DIFFUSERS_FOLDER, MODEL_FOLDERS, READABLE_SUFFIXES, HostedClip

_EMBEDDINGS_LOCK = threading.Lock()


def check_device_choice(device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"device={device!r}; use one of {', '.join(DEVICES)}")


class DeviceCache:
    """A view of a CPU chunk cache for towers on another device: stores on the CPU, returns on ``device``,
    so cached encodings never hold GPU memory that the host does not know about."""

    def __init__(self, base: ByteLRUCache, device: torch.device):
        self.base, self.device = base, device

    def get(self, key):
        value = self.base.get(key)
        if value is None:
            return None
        return tuple(None if t is None else t.to(self.device) for t in value)

    def put(self, key, value) -> None:
        self.base.put(key, tuple(None if t is None else t.to("cpu") for t in value))


class FolderHost:
    """The folder, embedding and model-bundle methods of a host (see :class:`~.interface.Host`)."""

    name = "host"

    def search_paths(self, folder: str) -> list[str]:
        raise NotImplementedError

    def folder_files(self, folder: str) -> list[str]:
        raise NotImplementedError

    def model_choices(self) -> list[str]:
        """Every model file we can read, as ``folder/name`` (checkpoints, text encoders, CLIP models)."""
        out = []
        for folder in MODEL_FOLDERS:
            names = [n for n in self.folder_files(folder) if n.lower().endswith(READABLE_SUFFIXES)]
            out += [f"{folder}/{n}" for n in sorted(names)]
        return out + [f"{DIFFUSERS_FOLDER}/{n}" for n in self.diffusers_folders()]

    def diffusers_folders(self) -> list[str]:
        """Diffusers pipelines (folders with model_index.json) under the ``diffusers`` model folders."""
        found = []
        for root in self.search_paths(DIFFUSERS_FOLDER):
            if not os.path.isdir(root):
                continue
            for dirpath, _dirs, files in walk_once(root):
                if "model_index.json" in files:
                    found.append(Path(os.path.relpath(dirpath, root)).as_posix())
        return sorted(set(found))

    def resolve_model(self, choice: str) -> str:
        """The path of a ``folder/name`` choice; ValueError naming the folders searched if it is missing."""
        folder, _, name = choice.partition("/")
        if folder not in MODEL_FOLDERS + (DIFFUSERS_FOLDER,) or not name:
            raise ValueError(
                f"model {choice!r} is not 'folder/name' with folder one of "
                f"{', '.join(MODEL_FOLDERS + (DIFFUSERS_FOLDER,))}; pick a file from the list"
            )
        for root in self.search_paths(folder):
            path = os.path.join(root, os.path.normpath(name))
            if (os.path.isdir(path) and folder == DIFFUSERS_FOLDER) or os.path.isfile(path):
                return path
        where = ", ".join(self.search_paths(folder)) or "no folder configured"
        raise ValueError(f"model {choice!r}: {name} is not in the {folder} folders ({where}); put it there or pick another")

    def clip_for(self, clip) -> HostedClip:
        """Our model for a ``clip`` input: a HostedClip as is, or a native ComfyUI CLIP driven in place."""
        if isinstance(clip, HostedClip):
            return clip
        if hasattr(clip, "cond_stage_model") and hasattr(clip, "patcher"):
            return self.from_native(clip)
        raise TypeError(
            f"clip input: expected CLIP Suite's loader output or ComfyUI's CLIP, got {type(clip).__name__}"
        )

    def from_native(self, clip) -> HostedClip:
        raise TypeError("a ComfyUI CLIP object can only be used inside ComfyUI")

    def blocked(self):
        """The value of an output with nothing to pass on (None outside ComfyUI)."""
        return None

    def chunk_cache(self, hosted: HostedClip):
        """The encoded-chunk cache for a model: the shared CPU cache, seen from the towers' device."""
        devices = {t.device for t in hosted.model.towers.values()}
        device = devices.pop() if len(devices) == 1 else torch.device("cpu")
        return CHUNK_CACHE if device.type == "cpu" else DeviceCache(CHUNK_CACHE, device)

    def embedding_folders(self) -> list[str]:
        """The folders textual-inversion embeddings are looked up in (ComfyUI's ``embeddings``)."""
        return self.search_paths("embeddings")

    def embedding_library(self) -> EmbeddingLibrary | None:
        """An EmbeddingLibrary over :meth:`embedding_folders` (None when none exists), kept between runs
        and rebuilt when an embedding file is added, removed or changed."""
        folders = [f for f in self.embedding_folders() if os.path.isdir(f)]
        if not folders:
            return None
        with _EMBEDDINGS_LOCK:
            library = getattr(self, "_embeddings", None)
            if library is None or not library.is_current(folders):
                library = EmbeddingLibrary(folders)
                self._embeddings = library
        return library

    def storage_device(self, hosted: HostedClip) -> torch.device | None:
        """Where towers derived from ``hosted`` (e.g. LoRA-patched) should live; None: where its towers are."""
        return None

    def derive(self, hosted: HostedClip, model: ClipModel) -> HostedClip:
        """A HostedClip for a model made from ``hosted``'s (same devices and origin)."""
        return HostedClip(model, origin=hosted.origin, native_layer=hosted.native_layer, notes=list(hosted.notes))
