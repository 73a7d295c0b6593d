"""The one module that talks to ComfyUI: its folders, devices, dtypes, model management and server.

Nothing here imports ``comfy``, ``folder_paths`` or ``server`` at module level; :func:`get_host` picks

- :class:`ComfyHost` when ComfyUI has loaded (``folder_paths`` and ``comfy.model_management`` are in
  ``sys.modules``, as they always are before ComfyUI imports a custom node pack). Each tower our loader
  loads (and a vision tower, when a model has one) is wrapped in one ``comfy.model_patcher.ModelPatcher``
  and ``load_models_gpu`` runs before each use, so ComfyUI moves, evicts and counts it like its own models
  (the way ``comfy/clip_vision.py`` wraps its vision model). ComfyUI's own CLIP is driven in place
  (``hosting/native_text.py``): its clone's patcher is loaded as ``CLIP.load_model`` does, and our
  encoders compute with its weights through ``comfy.ops.cast_bias_weight``;
- :class:`StandaloneHost` otherwise (CI, scripts).

Both implement :class:`hosting.interface.Host`; the value that travels between our nodes (ComfyUI type
``CLIP_SUITE``) is a :class:`HostedClip`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from pathlib import Path

import torch

from ..clip_impl.weights import load_clip, reshare
from ..clip_impl.model import ClipModel
from .hosting import native_text, tokens_route
from .hosting.folders import DeviceCache, FolderHost, check_device_choice
from .hosting.interface import DEVICES, DIFFUSERS_FOLDER, MODEL_FOLDERS, READABLE_SUFFIXES, Host, HostedClip
from .hosting.standalone import EMBEDDINGS_ENV, INPUT_ENV, StandaloneHost

__all__ = [
    "DEVICES", "DIFFUSERS_FOLDER", "EMBEDDINGS_ENV", "INPUT_ENV", "MODEL_FOLDERS", "READABLE_SUFFIXES", "ComfyHost",
    "DeviceCache", "Host", "HostedClip", "StandaloneHost", "get_host", "in_comfyui", "register_routes",
    "register_with_comfyui", "set_host",
]

log = logging.getLogger(__name__)

GPU_FALLBACK_NOTE = (
    "device gpu: ComfyUI runs with {state} (weights kept off the GPU), which CLIP Suite's own towers cannot "
    "follow layer by layer; loaded on the CPU in fp32 instead. For the GPU under this setting, feed "
    "ComfyUI's own CLIP (Load CLIP / DualCLIPLoader) to the encoders"
)


class _Hosted(torch.nn.Module):
    """What a ModelPatcher holds: our tower as a submodule, plus the plain ``device`` attribute that the
    patcher reads and writes (our towers expose ``device`` as a read-only property).

    Moving it (ComfyUI loads and offloads with ``.to()``) re-shares the tensors a LoRA-patched tower
    shares with its original, which the move would otherwise turn into a second copy."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = module
        self.device = device

    def _apply(self, fn, recurse=True):
        with self.inner.pending.hold():  # no copy of a freshly loaded tower while it moves
            out = super()._apply(fn, recurse)
        reshare(self.inner)
        return out


def comfy_fetch(module, dtype, device):
    """(weight, bias) of one of ComfyUI's layers as its own forward would use them (cast, offloaded layers
    brought over, lowvram patches applied): ``comfy.ops.cast_bias_weight``."""
    if hasattr(module, "comfy_cast_weights"):
        import comfy.ops

        return comfy.ops.cast_bias_weight(module, dtype=dtype, device=device, bias_dtype=dtype)
    return native_text.plain_fetch(module, dtype, device)


class ComfyHost(FolderHost):
    """Runs inside ComfyUI: its folders, devices, dtypes and model management."""

    name = "comfyui"

    def __init__(self):
        # One patcher per tower: a tower is shared only by loads with the same devices (see load()).
        self._patchers: "weakref.WeakValueDictionary[int, object]" = weakref.WeakValueDictionary()
        self._lock = threading.RLock()

    # ------------------------------------------------------------------------------- folders
    def input_directory(self) -> str | None:
        """ComfyUI's ``input`` folder (what LoadImage lists and uploads to), for the A1111 Parameters node."""
        import folder_paths

        return folder_paths.get_input_directory()

    def search_paths(self, folder: str) -> list[str]:
        import folder_paths

        return list(folder_paths.get_folder_paths(folder))

    def folder_files(self, folder: str) -> list[str]:
        import folder_paths

        return [Path(n).as_posix() for n in folder_paths.get_filename_list(folder)]

    # ------------------------------------------------------------------------------- devices
    def devices(self, device: str) -> tuple[torch.device, torch.device]:
        """(load device, offload device) for the loader's ``device`` option. ``gpu`` under ``--novram`` or
        ``--lowvram`` falls back to the CPU: ComfyUI would not move our plain modules there (only its
        own layers can be loaded in part), yet count them as loaded."""
        import comfy.model_management as mm

        check_device_choice(device)
        if device == "cpu":
            return torch.device("cpu"), torch.device("cpu")
        if device == "gpu":
            gpu = mm.get_torch_device()
            if gpu.type == "cpu":
                log.warning("device=gpu: ComfyUI runs on the CPU here; loading on the CPU")
            elif self._gpu_fallback_note() is not None:
                log.warning(self._gpu_fallback_note())
                return torch.device("cpu"), torch.device("cpu")
            return gpu, mm.text_encoder_offload_device()
        return mm.text_encoder_device(), mm.text_encoder_offload_device()

    def _gpu_fallback_note(self) -> str | None:
        import comfy.model_management as mm

        state = mm.vram_state
        if state in (mm.VRAMState.NO_VRAM, mm.VRAMState.LOW_VRAM):
            return GPU_FALLBACK_NOTE.format(state="--novram" if state == mm.VRAMState.NO_VRAM else "--lowvram")
        return None

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
            paths, architecture, clip_precision, device=offload_device, with_vision=with_vision,
            storage_dtype=storage, placement=f"{load_device}>{offload_device}",
        )
        notes = []
        if device == "gpu" and load_device.type == "cpu" and self._gpu_fallback_note() is not None:
            notes.append(self._gpu_fallback_note())
        return HostedClip(model, self._patch(model, load_device, offload_device), origin="files", notes=notes)

    def _patch(self, model: ClipModel, load_device, offload_device) -> dict:
        """The ModelPatcher of each tower (made once per tower; the same tower always gets the same one)."""
        import comfy.model_patcher

        parts = dict(model.towers)
        if model.vision is not None:
            parts["vision"] = model.vision
        out = {}
        with self._lock:
            for part, module in parts.items():
                patcher = self._patchers.get(id(module))
                if patcher is None or patcher.model.inner is not module:
                    wrapper = _Hosted(module, module.device)
                    # Counted at its final size (a freshly loaded tower's copies are made in the background).
                    size = module.pending.final_nbytes(module)
                    patcher = comfy.model_patcher.ModelPatcher(
                        wrapper, load_device=load_device, offload_device=offload_device, size=size
                    )
                    self._patchers[id(module)] = patcher
                elif patcher.load_device != load_device:  # the sharing key in load_clip rules this out
                    raise RuntimeError(f"{module.source}: one tower asked to run on {patcher.load_device} and {load_device}")
                out[part] = patcher
        return out

    def from_native(self, clip) -> HostedClip:
        """ComfyUI's CLIP (or a clone from CLIPSetLastLayer/LoraLoader) as towers that run on its own
        weights: nothing is copied; :meth:`prepare` loads the clone's patcher, which writes its patches."""
        csm, patcher = clip.cond_stage_model, clip.patcher
        native_text.check_native(csm)
        model = native_text.model_from_native(csm, comfy_fetch, patch_key=str(patcher.patches_uuid))
        patchers = {role: patcher for role in model.towers}
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
        return HostedClip(model, patchers, origin=hosted.origin, native_layer=hosted.native_layer,
                          notes=list(hosted.notes))

    def prepare(self, hosted: HostedClip, parts=None) -> None:
        """Let ComfyUI load the towers (all text towers by default; ``parts=("vision",)`` for the vision
        tower) onto their device, freeing memory as it does for its own models."""
        import comfy.model_management as mm

        wanted = hosted.text_parts if parts is None else tuple(parts)
        patchers = list({id(p): p for p in (hosted.patchers[w] for w in wanted if w in hosted.patchers)}.values())
        if not patchers:
            return
        if hosted.origin == "native":
            # As CLIP.load_model: ComfyUI decides (full, partial or no load); its layers cast per use.
            mm.load_models_gpu(patchers)
            return
        for patcher in patchers:  # ComfyUI moves submodules one by one: no background copy may be left
            patcher.model.inner.pending.settle()
        # Our layers are plain torch.nn modules: only comfy.ops layers can be partially loaded.
        mm.load_models_gpu(patchers, force_full_load=True)
        for patcher in patchers:
            reshare(patcher.model)

    def output(self, t: torch.Tensor) -> torch.Tensor:
        import comfy.model_management as mm

        return t.to(mm.intermediate_device())

    def blocked(self):
        """ComfyUI's silent ExecutionBlocker: the nodes fed by this output are skipped, without an error."""
        from comfy_execution.graph_utils import ExecutionBlocker

        return ExecutionBlocker(None)


_OVERRIDE: Host | None = None
_COMFY: ComfyHost | None = None
_STANDALONE: StandaloneHost | None = None


def in_comfyui() -> bool:
    """Whether ComfyUI has loaded (it imports these before any custom node pack)."""
    return "folder_paths" in sys.modules and "comfy.model_management" in sys.modules


def get_host() -> Host:
    """The host for this process (tests may pin one with :func:`set_host`)."""
    global _COMFY, _STANDALONE
    if _OVERRIDE is not None:
        return _OVERRIDE
    if in_comfyui():
        _COMFY = _COMFY or ComfyHost()
        return _COMFY
    _STANDALONE = _STANDALONE or StandaloneHost()
    return _STANDALONE


def set_host(host: Host | None) -> Host | None:
    """Pin a host (None: choose automatically again); returns the previous pin."""
    global _OVERRIDE
    previous, _OVERRIDE = _OVERRIDE, host
    return previous


def register_routes() -> bool:
    """Hang the web extension's tokenizer route (``tokens_route.ROUTE``) on ComfyUI's server.

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
    routes = instance.routes
    route = tokens_route.ROUTE
    if any(getattr(r, "path", None) == route and getattr(r, "method", None) == "POST" for r in routes):
        return False
    # The host's library is rebuilt when the embeddings folders change, so embeddings added while ComfyUI
    # runs count at once; files are read only when a prompt references them.
    routes.post(route)(tokens_route.make_handler(lambda: get_host().embedding_library()))
    log.debug("registered POST %s", route)
    return True


# ----------------------------------------------------------------------------------- aesthetic heads
# The ``aesthetic`` model folder (LAION aesthetic predictor heads) for the Aesthetic Score node and Keep
# Best: ``models/aesthetic`` in ComfyUI (registered with folder_paths, so extra_model_paths.yaml can add
# folders), ``$CLIP_SUITE_MODELS/aesthetic`` standalone. The one definition of its name: the nodes' tooltips
# and messages name it as AESTHETIC_DIR.
AESTHETIC_FOLDER = "aesthetic"
AESTHETIC_DIR = f"models/{AESTHETIC_FOLDER}"
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


def register_with_comfyui() -> None:
    """Everything the pack hangs on ComfyUI when ComfyUI imports it: the web extension's tokenizer route
    (:func:`register_routes`) and the ``aesthetic`` model folder (:func:`register_aesthetic_folder`).
    A no-op outside ComfyUI; calling it again (the pack imported twice) adds nothing twice."""
    register_routes()
    register_aesthetic_folder()
