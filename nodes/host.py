"""The one module that talks to the host: ComfyUI's folders, devices, dtypes and model management.

Nothing here imports ``comfy``, ``folder_paths`` or ``server`` at module level; :func:`get_host` picks

- :class:`ComfyHost` when ComfyUI has loaded (``folder_paths`` and ``comfy.model_management`` are in
  ``sys.modules``, as they always are before ComfyUI imports a custom node pack). Each loaded tower (and a
  vision tower, when a model has one) is wrapped in a ``comfy.model_patcher.ModelPatcher`` and
  ``load_models_gpu`` runs before each use, so ComfyUI moves, evicts and counts it like its own models
  (the way ``comfy/clip_vision.py`` wraps its vision model);
- :class:`StandaloneHost` otherwise (CI, scripts): model folders under ``$CLIP_SUITE_MODELS``, the CPU
  (or CUDA when present), no model management.

The value that travels between our nodes (ComfyUI type ``CLIP_SUITE``) is a :class:`HostedClip`.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..clip_impl.cache import CHUNK_CACHE, ByteLRUCache
from ..clip_impl.embeddings import EmbeddingLibrary
from ..clip_impl.folders import walk_once
from ..clip_impl.loading import load_clip
from ..clip_impl.model import ClipModel
from . import native_clip

log = logging.getLogger(__name__)

MODEL_FOLDERS = ("checkpoints", "text_encoders", "clip_vision")
DIFFUSERS_FOLDER = "diffusers"
READABLE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
DEVICES = ("auto", "cpu", "gpu")
NATIVE_CACHE_SIZE = 2  # converted native CLIPs kept (each is a full copy of its text encoders)
EMBEDDINGS_ENV = "CLIP_SUITE_EMBEDDINGS"
INPUT_ENV = "CLIP_SUITE_INPUT"  # standalone host: the folder the A1111 Parameters node lists images from  # standalone host: embedding folders (os.pathsep-separated)
_EMBEDDINGS_LOCK = threading.Lock()


@dataclass
class HostedClip:
    """A CLIP model as the host runs it: the towers, their patchers, and notes for the node status.

    ``patchers`` maps a part ("l", "g", "h" for text towers, "vision") to its ModelPatcher (empty in the
    standalone host). ``native_layer`` is the ``CLIPSetLastLayer`` value of a native CLIP input, if any.
    """

    model: ClipModel
    patchers: dict = field(default_factory=dict)
    origin: str = ""
    native_layer: int | None = None

    @property
    def text_parts(self) -> tuple[str, ...]:
        return tuple(self.model.towers)


class _Hosted(torch.nn.Module):
    """What a ModelPatcher holds: our tower as a submodule, plus the plain ``device`` attribute that the
    patcher reads and writes (our towers expose ``device`` as a read-only property)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = module
        self.device = device


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


class _Host:
    """What both hosts share: ``folder/name`` model choices and their resolution to paths."""

    name = "host"

    def search_paths(self, folder: str) -> list[str]:
        raise NotImplementedError

    def folder_files(self, folder: str) -> list[str]:
        """Files (relative names) in a model folder, as the host lists them."""
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
        """Our model for a ``clip`` input: a HostedClip as is, or a native ComfyUI CLIP converted."""
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
        devices = {_module_device(t) for t in hosted.model.towers.values()}
        device = devices.pop() if len(devices) == 1 else torch.device("cpu")
        return CHUNK_CACHE if device.type == "cpu" else DeviceCache(CHUNK_CACHE, device)

    # ------------------------------------------------------------------------------- embeddings, LoRA
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
        return HostedClip(model, origin=hosted.origin, native_layer=hosted.native_layer)

    # ------------------------------------------------------------------------------- input folder
    def input_directory(self) -> str | None:
        """The folder LoadImage lists and uploads to (ComfyUI's ``input``); standalone: $CLIP_SUITE_INPUT.
        None when there is none. Used by the A1111 Parameters node's ``image`` input."""
        if in_comfyui():
            import folder_paths

            return folder_paths.get_input_directory()
        return os.environ.get(INPUT_ENV) or None


class StandaloneHost(_Host):
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

    def device(self, device: str) -> torch.device:
        if device not in DEVICES:
            raise ValueError(f"device={device!r}; use one of {', '.join(DEVICES)}")
        if device == "cpu":
            return torch.device("cpu")
        if torch.cuda.is_available():
            return torch.device("cuda")
        if device == "gpu":
            log.warning("device=gpu: no CUDA device here; running on the CPU")
        return torch.device("cpu")

    def load(self, paths, architecture="auto", precision="auto", device="auto", with_vision=False) -> HostedClip:
        """Load files on the chosen device (``with_vision``: also find a vision tower, for scoring)."""
        model = load_clip(paths, architecture, precision, device=self.device(device), with_vision=with_vision)
        return HostedClip(model, origin="files")

    def prepare(self, hosted: HostedClip, parts=None) -> None:
        """Nothing to do: standalone towers stay where they were loaded."""


    def output(self, t: torch.Tensor) -> torch.Tensor:
        return t.to("cpu")


class ComfyHost(_Host):
    """Runs inside ComfyUI: its folders, devices, dtypes and model management."""

    name = "comfyui"

    def __init__(self):
        self._patchers: "weakref.WeakValueDictionary[tuple, object]" = weakref.WeakValueDictionary()
        self._native: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.RLock()

    # ------------------------------------------------------------------------------- folders
    def search_paths(self, folder: str) -> list[str]:
        import folder_paths

        return list(folder_paths.get_folder_paths(folder))

    def folder_files(self, folder: str) -> list[str]:
        import folder_paths

        return [Path(n).as_posix() for n in folder_paths.get_filename_list(folder)]

    # ------------------------------------------------------------------------------- devices
    def devices(self, device: str) -> tuple[torch.device, torch.device]:
        """(load device, offload device) for the loader's ``device`` option."""
        import comfy.model_management as mm

        if device not in DEVICES:
            raise ValueError(f"device={device!r}; use one of {', '.join(DEVICES)}")
        if device == "cpu":
            return torch.device("cpu"), torch.device("cpu")
        if device == "gpu":
            gpu = mm.get_torch_device()
            if gpu.type == "cpu":
                log.warning("device=gpu: ComfyUI runs on the CPU here; loading on the CPU")
            return gpu, mm.text_encoder_offload_device()
        return mm.text_encoder_device(), mm.text_encoder_offload_device()

    def storage(self, precision: str, load_device: torch.device) -> tuple[str, torch.dtype | None]:
        """(clip_impl precision, storage dtype override). ``auto`` keeps ComfyUI's numbers: weights in
        ComfyUI's text-encoder dtype, computed in fp32; on the CPU fp16 weights are kept as fp32 copies
        of the fp16 values (same numbers, no cast per layer and pass)."""
        import comfy.model_management as mm

        if precision != "auto":
            return precision, None
        dtype = mm.text_encoder_dtype(load_device)
        if dtype == torch.float32:
            return "fp32", None
        if dtype == torch.bfloat16:
            return "fp32", torch.bfloat16
        if dtype != torch.float16:
            log.warning("text encoder dtype %s is not supported by CLIP Suite; using fp16 weights", dtype)
        return "auto", (None if load_device.type == "cpu" else torch.float16)

    # ------------------------------------------------------------------------------- models
    def load(self, paths, architecture="auto", precision="auto", device="auto", with_vision=False) -> HostedClip:
        """Load files on the offload device, with a ModelPatcher per tower for ComfyUI to move them."""
        load_device, offload_device = self.devices(device)
        clip_precision, storage = self.storage(precision, load_device)
        model = load_clip(
            paths, architecture, clip_precision, device=offload_device, with_vision=with_vision, storage_dtype=storage
        )
        return HostedClip(model, self._patch(model, load_device, offload_device), origin="files")

    def _patch(self, model: ClipModel, load_device, offload_device) -> dict:
        """One shared ModelPatcher per tower (the same tower always gets the same patcher)."""
        import comfy.model_patcher

        parts = dict(model.towers)
        if model.vision is not None:
            parts["vision"] = model.vision
        out = {}
        with self._lock:
            for part, module in parts.items():
                key = (id(module), str(load_device), str(offload_device))
                patcher = self._patchers.get(key)
                if patcher is None or patcher.model.inner is not module:
                    wrapper = _Hosted(module, _module_device(module))
                    patcher = comfy.model_patcher.ModelPatcher(wrapper, load_device=load_device, offload_device=offload_device)
                    self._patchers[key] = patcher
                out[part] = patcher
        return out

    def from_native(self, clip) -> HostedClip:
        """Our towers for a ComfyUI CLIP (or a clone from CLIPSetLastLayer/LoraLoader), cached per
        (cond_stage_model, patch set). The clone's own patcher is loaded first, so its LoRA patches are
        written into the shared weights (rounded to their stored dtype) before they are read."""
        import comfy.model_management as mm

        csm, patcher = clip.cond_stage_model, clip.patcher
        key = (id(csm), patcher.patches_uuid)
        with self._lock:
            entry = self._native.get(key)
            if entry is not None and entry[0]() is csm:
                self._native.move_to_end(key)
                model, patchers = entry[1], entry[2]
            else:
                native_clip.check_native(csm)
                mm.load_models_gpu([patcher], force_full_load=True)
                storage = None if patcher.load_device.type == "cpu" else native_clip.native_dtype(csm)
                model = native_clip.model_from_native(csm, device=patcher.offload_device, storage_dtype=storage)
                patchers = self._patch(model, patcher.load_device, patcher.offload_device)
                self._native[key] = (weakref.ref(csm), model, patchers)
                weakref.finalize(csm, self._drop_native, key)
                while len(self._native) > NATIVE_CACHE_SIZE:
                    self._native.popitem(last=False)
        return HostedClip(model, patchers, origin="native", native_layer=getattr(clip, "layer_idx", None))

    def storage_device(self, hosted: HostedClip) -> torch.device | None:
        """Derived towers live where ComfyUI keeps the originals between runs (the offload device)."""
        patcher = next(iter(hosted.patchers.values()), None)
        return None if patcher is None else patcher.offload_device

    def derive(self, hosted: HostedClip, model: ClipModel) -> HostedClip:
        """A HostedClip for a derived model, its new towers wrapped in patchers on ``hosted``'s devices."""
        patcher = next(iter(hosted.patchers.values()), None)
        if patcher is None:
            return super().derive(hosted, model)
        patchers = self._patch(model, patcher.load_device, patcher.offload_device)
        return HostedClip(model, patchers, origin=hosted.origin, native_layer=hosted.native_layer)

    def _drop_native(self, key) -> None:
        with self._lock:
            self._native.pop(key, None)

    def prepare(self, hosted: HostedClip, parts=None) -> None:
        """Let ComfyUI load the towers (all text towers by default; ``parts=("vision",)`` for the vision
        tower) onto their device, freeing memory as it does for its own models."""
        import comfy.model_management as mm

        wanted = hosted.text_parts if parts is None else tuple(parts)
        patchers = [hosted.patchers[p] for p in wanted if p in hosted.patchers]
        if patchers:
            # Our layers are plain torch.nn modules: only comfy.ops layers can be partially loaded.
            mm.load_models_gpu(patchers, force_full_load=True)


    def output(self, t: torch.Tensor) -> torch.Tensor:
        import comfy.model_management as mm

        return t.to(mm.intermediate_device())

    def blocked(self):
        """ComfyUI's silent ExecutionBlocker: the nodes fed by this output are skipped, without an error."""
        from comfy_execution.graph_utils import ExecutionBlocker

        return ExecutionBlocker(None)


def _module_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


_OVERRIDE: _Host | None = None
_COMFY: ComfyHost | None = None
_STANDALONE: StandaloneHost | None = None


def embedding_library() -> EmbeddingLibrary | None:
    """The current host's embedding library (None without an embeddings folder), for the encoders, the
    token report and the web route's ``embeddings_factory``."""
    return get_host().embedding_library()


def in_comfyui() -> bool:
    """Whether ComfyUI has loaded (it imports these before any custom node pack)."""
    return "folder_paths" in sys.modules and "comfy.model_management" in sys.modules


def get_host() -> _Host:
    """The host for this process (tests may pin one with :func:`set_host`)."""
    global _COMFY, _STANDALONE
    if _OVERRIDE is not None:
        return _OVERRIDE
    if in_comfyui():
        _COMFY = _COMFY or ComfyHost()
        return _COMFY
    _STANDALONE = _STANDALONE or StandaloneHost()
    return _STANDALONE


def set_host(host: _Host | None) -> _Host | None:
    """Pin a host (None: choose automatically again); returns the previous pin."""
    global _OVERRIDE
    previous, _OVERRIDE = _OVERRIDE, host
    return previous


# ----------------------------------------------------------------------------------- web route
def register_routes() -> bool:
    """Hang the web extension's tokenizer route (``tokens_api.ROUTE``) on ComfyUI's server.

    Does nothing outside a running ComfyUI server (no ``server`` module loaded, or no PromptServer yet)
    and nothing when the route is already there (the pack imported twice). Returns whether it added it.
    ComfyUI builds its aiohttp app from ``PromptServer.instance.routes`` after loading custom nodes, and
    serves each route under ``/api`` too, which is where the frontend's ``api.fetchApi`` sends requests.
    """
    if not in_comfyui() or "server" not in sys.modules:
        return False
    import server

    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return False
    from . import tokens_api

    routes = instance.routes
    if any(getattr(r, "path", None) == tokens_api.ROUTE and getattr(r, "method", None) == "POST" for r in routes):
        return False
    # The host's library is rebuilt when the embeddings folders change, so embeddings added while ComfyUI
    # runs count at once; files are read only when a prompt references them.
    routes.post(tokens_api.ROUTE)(tokens_api.make_handler(embedding_library))
    log.debug("registered POST %s", tokens_api.ROUTE)
    return True


# ----------------------------------------------------------------------------------- aesthetic heads
# The ``aesthetic`` model folder (LAION aesthetic predictor heads) for the Aesthetic Score node and Keep
# Best: ``models/aesthetic`` in ComfyUI (registered with folder_paths, so extra_model_paths.yaml can add
# folders), ``$CLIP_SUITE_MODELS/aesthetic`` standalone.
AESTHETIC_FOLDER = "aesthetic"
AESTHETIC_SUFFIXES = (".pth", ".pt", ".safetensors")


def register_aesthetic_folder() -> bool:
    """Add ``models/aesthetic`` to ComfyUI's folder_paths (once; keeps folders users configured).
    Returns whether ComfyUI is there."""
    if not in_comfyui():
        return False
    import folder_paths

    if AESTHETIC_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(AESTHETIC_FOLDER, os.path.join(folder_paths.models_dir, AESTHETIC_FOLDER))
    _paths, extensions = folder_paths.folder_names_and_paths[AESTHETIC_FOLDER]
    extensions.update(AESTHETIC_SUFFIXES)  # a folder added from extra_model_paths.yaml starts with none
    return True


def aesthetic_heads() -> list[str]:
    """Head files in the aesthetic folder(s), as relative names."""
    register_aesthetic_folder()
    names = get_host().folder_files(AESTHETIC_FOLDER)
    return sorted(n for n in names if n.lower().endswith(AESTHETIC_SUFFIXES))


def aesthetic_head_path(name: str) -> str:
    """The path of a head file chosen from :func:`aesthetic_heads`; ValueError naming the folders if missing."""
    register_aesthetic_folder()
    roots = get_host().search_paths(AESTHETIC_FOLDER)
    rel = os.path.normpath(name)
    if not name or os.path.isabs(rel) or rel.split(os.sep)[0] == "..":
        raise ValueError(f"aesthetic head {name!r}: pick a file from the list (a name inside the aesthetic folder)")
    for root in roots:
        path = os.path.join(root, rel)
        if os.path.isfile(path):
            return path
    where = ", ".join(roots) or "no aesthetic folder configured"
    raise ValueError(
        f"aesthetic head {name!r} is not in the aesthetic folders ({where}); put the .pth/.safetensors file there "
        "(e.g. sac+logos+ava1-l14-linearMSE.pth) and refresh"
    )
