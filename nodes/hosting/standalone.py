"""The host outside ComfyUI (CI, scripts): model folders under ``$CLIP_SUITE_MODELS`` in ComfyUI's
``models/`` layout, the CPU (or CUDA when present), no model management."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ...clip_impl.folders import walk_once
from ...clip_impl.weights import load_clip
from .folders import FolderHost, check_device_choice
from .interface import HostedClip

log = logging.getLogger(__name__)

EMBEDDINGS_ENV = "CLIP_SUITE_EMBEDDINGS"  # embedding folders (os.pathsep-separated)
INPUT_ENV = "CLIP_SUITE_INPUT"  # the folder the A1111 Parameters node lists images from


class StandaloneHost(FolderHost):
    """Runs our nodes without ComfyUI: folders under ``models_dir`` (ComfyUI's ``models/`` layout)."""

    name = "standalone"

    def __init__(self, models_dir: str | os.PathLike | None = None):
        models_dir = models_dir or os.environ.get("CLIP_SUITE_MODELS")
        self.models_dir = Path(models_dir) if models_dir else None

    def search_paths(self, folder: str) -> list[str]:
        if self.models_dir is None:
            return []
        names = (folder, "clip") if folder == "text_encoders" else (folder,)
        return [str(self.models_dir / n) for n in names]

    def input_directory(self) -> str | None:
        """$CLIP_SUITE_INPUT (None when unset): the folder the A1111 Parameters node lists images from."""
        return os.environ.get(INPUT_ENV) or None

    def folder_files(self, folder: str) -> list[str]:
        out = []
        for root in self.search_paths(folder):
            if os.path.isdir(root):
                for dirpath, _dirs, files in walk_once(root):
                    out += [Path(os.path.relpath(os.path.join(dirpath, f), root)).as_posix() for f in files]
        return sorted(set(out))

    def embedding_folders(self) -> list[str]:
        """$CLIP_SUITE_EMBEDDINGS when set, else ``embeddings/`` in the models folder."""
        from_env = os.environ.get(EMBEDDINGS_ENV)
        if from_env:
            return [p for p in from_env.split(os.pathsep) if p]
        return self.search_paths("embeddings")

    def devices(self, device: str) -> tuple[torch.device, torch.device]:
        """(load, offload) device: the same one here (nothing moves towers between runs)."""
        check_device_choice(device)
        chosen = torch.device("cpu")
        if device != "cpu" and torch.cuda.is_available():
            chosen = torch.device("cuda")
        elif device == "gpu":
            log.warning("device=gpu: no CUDA device here; running on the CPU")
        return chosen, chosen

    def load(self, paths, architecture="auto", precision="auto", device="auto", with_vision=False) -> HostedClip:
        """Load files on the chosen device (``with_vision``: also find a vision tower, for scoring)."""
        load_device, _ = self.devices(device)
        model = load_clip(paths, architecture, precision, device=load_device, with_vision=with_vision)
        return HostedClip(model, origin="files")

    def prepare(self, hosted: HostedClip, parts=None) -> None:
        """Nothing to do: standalone towers stay where they were loaded."""

    def output(self, t: torch.Tensor) -> torch.Tensor:
        return t.to("cpu")
