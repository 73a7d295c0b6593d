"""The host interface: what the nodes ask of the host, and the model value that travels between nodes.

Two hosts implement :class:`Host`: ``host.ComfyHost`` inside ComfyUI (its folders, devices and model
management) and :class:`~.standalone.StandaloneHost` elsewhere. Nodes get the current one from
``host.get_host()`` and use only the methods declared here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from ...clip_impl.text import EmbeddingLibrary
from ...clip_impl.model import ClipModel

MODEL_FOLDERS = ("checkpoints", "text_encoders", "clip_vision")
DIFFUSERS_FOLDER = "diffusers"
READABLE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
DEVICES = ("auto", "cpu", "gpu")


@dataclass
class HostedClip:
    """A CLIP model as the host runs it: the towers, their patchers, and notes for the node status.

    ``patchers`` maps a part ("l", "g", "h" for text towers, "vision") to the ModelPatcher that moves it
    (empty in the standalone host; for ComfyUI's own CLIP every text part maps to the CLIP's patcher).
    ``origin``: "files" (our loader) or "native" (ComfyUI's CLIP). ``native_layer``: the
    ``CLIPSetLastLayer`` value of a native CLIP input, if any. ``notes``: lines for the node status
    (e.g. a device fall-back).
    """

    model: ClipModel
    patchers: dict = field(default_factory=dict)
    origin: str = ""
    native_layer: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def text_parts(self) -> tuple[str, ...]:
        return tuple(self.model.towers)


@runtime_checkable
class Host(Protocol):
    """Every method the nodes call on a host (one name per concept)."""

    name: str

    # -- model folders
    def search_paths(self, folder: str) -> list[str]:
        """The directories of a model folder (``checkpoints``, ``loras``, ``embeddings``, ...)."""

    def folder_files(self, folder: str) -> list[str]:
        """Files (relative names) in a model folder, as the host lists them."""

    def model_choices(self) -> list[str]:
        """Every model file we can read, as ``folder/name``."""

    def resolve_model(self, choice: str) -> str:
        """The path of a ``folder/name`` choice; ValueError naming the folders searched if it is missing."""

    # -- devices and models
    def devices(self, device: str) -> tuple[torch.device, torch.device]:
        """(load device, offload device) for the loader's ``device`` option (one of :data:`DEVICES`)."""

    def load(self, paths, architecture="auto", precision="auto", device="auto", with_vision=False) -> HostedClip:
        """Load model files as our towers, managed by the host."""

    def clip_for(self, clip) -> HostedClip:
        """Our model for a ``clip`` input: a HostedClip as is, or ComfyUI's own CLIP driven in place."""

    def prepare(self, hosted: HostedClip, parts=None) -> None:
        """Put the towers (default: every text tower; or ``parts``) where they run, before a forward."""

    def output(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor on the device the host passes between nodes."""

    def blocked(self):
        """The value of an output with nothing to pass on."""

    def chunk_cache(self, hosted: HostedClip):
        """The encoded-chunk cache for a model (entries kept on the CPU)."""

    def embedding_library(self) -> EmbeddingLibrary | None:
        """The textual-inversion library of the host's embeddings folders (None without one)."""

    def storage_device(self, hosted: HostedClip) -> torch.device | None:
        """Where towers derived from ``hosted`` should live; None: where its towers are."""

    def derive(self, hosted: HostedClip, model: ClipModel) -> HostedClip:
        """A HostedClip for a model made from ``hosted``'s (e.g. LoRA-patched towers)."""

    def input_directory(self) -> str | None:
        """The folder LoadImage lists and uploads to (ComfyUI's ``input``); None when there is none."""
