"""ComfyUI's own ``CLIP`` driven through our tower interface, without a second copy of its weights.

A native ``CLIP`` keeps its text encoders in ``clip.cond_stage_model``, one child per tower: ``clip_l``
(SD1.x, SDXL), ``clip_g`` (SDXL, refiner), ``clip_h`` (SD2.x), each with a ``transformer`` whose module tree
uses transformers' names (``text_model.encoder.layers.N.self_attn.q_proj``, ``layer_norm1``, ``mlp.fc1``,
``final_layer_norm``, ``text_projection``; ``comfy/clip_model.py``).

:class:`NativeTower` is a :class:`~clip_suite.clip_impl.towers.text.TextTower` whose leaves are
:class:`~clip_suite.clip_impl.towers.transformer.Borrowed`: at each use it fetches the weights of ComfyUI's
layer, cast to the compute dtype on the compute device, through a ``fetch(module, dtype, device)``
function. Inside ComfyUI the host passes ``comfy.ops.cast_bias_weight``, so whatever ComfyUI has done to
the weights is what we compute with: LoRA/LoHa/LoKr/DoRA and hook patches written into them when the
clone's patcher loaded, per-use ``weight_function`` patches and offloaded layers of a ``lowvram`` load.
Our maths (layer choice, the pooled vector, embeddings, chunk batching) runs unchanged on top, so the
encoders' numbers are those of our own towers on the same (patched, fp16-rounded) values. q, k and v are
fetched separately and stacked by rows, as our fused ``in_proj`` expects.

Nothing here imports ComfyUI; it works on the objects' attributes (the tests use transformers' CLIP text
models, which have the same module tree).

CLIP-L's ``text_projection`` is never read: SD1.x conditioning uses the unprojected pooled vector, SDXL
pools from CLIP-G, and ComfyUI leaves that weight uninitialised when a checkpoint does not hold it.
"""

from __future__ import annotations

import functools
import threading
import uuid
import weakref
from collections import OrderedDict

import torch

from ...clip_impl.cache import forget
from ...clip_impl.clip_skip import FAMILIES
from ...clip_impl.weights import find_text_towers
from ...clip_impl.model import ClipModel
from ...clip_impl.towers import TextTower
from ...clip_impl.towers import Borrowed

TOWER_CHILDREN = {"clip_l": "l", "clip_g": "g", "clip_h": "h"}
_FAMILY_BY_ROLES = {
    frozenset("l"): "sd1",
    frozenset("h"): "sd2",
    frozenset("g"): "sdxl_refiner",
    frozenset("lg"): "sdxl",
}
# ComfyUI's classes for the families above; another class with the same towers encodes differently
# (Stable Cascade's clip_g, for one), so it is refused by name.
KNOWN_CLASSES = {"SD1ClipModel", "SD2ClipModel", "SDXLClipModel", "SDXLRefinerClipModel"}
# Per native model (its cond_stage_model), kept only while it lives: an id (its cached encodings are
# dropped with it) and the models built over it, per patch set (building one takes a moment; it holds
# ComfyUI's child modules, never the cond_stage_model itself, so the entry does not keep it alive).
_NATIVE: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[str, OrderedDict]]" = weakref.WeakKeyDictionary()
_NATIVE_LOCK = threading.Lock()
MODELS_PER_NATIVE = 8  # patch sets kept per native model (LoRA clones of one CLIP)


def family_of(children, class_name: str) -> str:
    """The architecture for a native model with these child modules; ValueError for anything else."""
    roles = frozenset(TOWER_CHILDREN[c] for c in children if c in TOWER_CHILDREN)
    others = sorted(c for c in children if c not in TOWER_CHILDREN)
    family = _FAMILY_BY_ROLES.get(roles)
    if others or family is None or class_name not in KNOWN_CLASSES:
        parts = ", ".join(sorted(children)) or "no text encoder"
        raise ValueError(
            f"clip input: this ComfyUI CLIP ({class_name}: {parts}) is not an SD1.x, SD2.x or SDXL text encoder; "
            "CLIP Suite encodes those only. Use ComfyUI's CLIPTextEncode for this model"
        )
    return family


def check_native(csm) -> str:
    """Family of a native ``cond_stage_model``, refusing fp8 weights (they need ComfyUI's own layers)."""
    family = family_of([n for n, _ in csm.named_children()], type(csm).__name__)
    for name, p in csm.named_parameters():
        if p.dtype not in (torch.float32, torch.float16, torch.bfloat16) or name.endswith("scaled_fp8"):
            raise ValueError(
                f"clip input: the text encoder holds {p.dtype} weights ({name}); CLIP Suite reads fp32/fp16/bf16 "
                "only. Load an fp16 text encoder, or load the file with CLIP Suite's loader"
            )
    return family


def plain_fetch(module, dtype: torch.dtype | None, device: torch.device):
    """(weight, bias) of a layer in ``dtype`` (None: as stored) on ``device``, with the per-use patches a
    host may have attached (``weight_function``/``bias_function`` lists, ComfyUI's lowvram patches) applied
    after the cast, as ``comfy.ops.cast_bias_weight`` does."""
    out = []
    for name in ("weight", "bias"):
        t = getattr(module, name, None)
        if t is None:
            out.append(None)
            continue
        functions = getattr(module, f"{name}_function", None) or ()
        t = t.to(device=device, dtype=dtype or t.dtype, copy=bool(functions))
        for f in functions:
            t = f(t)
        out.append(t)
    return out[0], out[1]


def _fetch_stacked(fetch, modules, dtype, device):
    """q, k and v of ComfyUI's attention as our fused ``in_proj``: weights (3C, C), biases (3C,)."""
    parts = [fetch(m, dtype, device) for m in modules]
    return torch.cat([w for w, _ in parts]), torch.cat([b for _, b in parts])


class NativeTower(TextTower):
    """A text tower that computes with a ComfyUI text model's weights (``transformer``: the
    ``CLIPTextModel`` of one ``cond_stage_model`` child), fetched per use; it owns no parameters."""

    def __init__(self, cfg, transformer, fetch=plain_fetch, *, cache_id: str, source: str):
        with torch.device("meta"):  # the parameters this replaces are never allocated
            super().__init__(cfg, source=source, cache_id=cache_id)
        theirs = transformer.text_model
        self._native_embedding = (theirs.embeddings.token_embedding,)  # a tuple: not our submodule
        ours = self.text_model
        ours.embeddings.token_embedding = Borrowed(functools.partial(fetch, theirs.embeddings.token_embedding))
        ours.embeddings.position_embedding = Borrowed(functools.partial(fetch, theirs.embeddings.position_embedding))
        norm_shape = (cfg.width,)
        for block, native in zip(ours.encoder.layers, theirs.encoder.layers, strict=True):
            attn = native.self_attn
            block.layer_norm1 = Borrowed(functools.partial(fetch, native.layer_norm1), norm_shape)
            block.layer_norm2 = Borrowed(functools.partial(fetch, native.layer_norm2), norm_shape)
            block.self_attn.in_proj = Borrowed(
                functools.partial(_fetch_stacked, fetch, (attn.q_proj, attn.k_proj, attn.v_proj))
            )
            block.self_attn.out_proj = Borrowed(functools.partial(fetch, attn.out_proj))
            block.mlp.fc1 = Borrowed(functools.partial(fetch, native.mlp.fc1))
            block.mlp.fc2 = Borrowed(functools.partial(fetch, native.mlp.fc2))
        ours.final_layer_norm = Borrowed(functools.partial(fetch, theirs.final_layer_norm), norm_shape)
        if self.text_projection is not None:
            self.text_projection = Borrowed(functools.partial(fetch, transformer.text_projection))

    @property
    def device(self) -> torch.device:
        """Where ComfyUI computes this text model: where its token embedding is (as ``SDClipModel`` does)."""
        return self._native_embedding[0].weight.device


def model_from_native(csm, fetch=plain_fetch, patch_key: str = "") -> ClipModel:
    """A ClipModel of :class:`NativeTower` over a native ``cond_stage_model`` (no weights copied).

    ``patch_key`` names the patch set the weights carry when the towers run (ComfyUI: the clone's
    ``patcher.patches_uuid``): encodings are cached per (model, patch set, tower). Built once per
    (model, fetch, patch set) while the model lives.
    """
    with _NATIVE_LOCK:
        entry = _NATIVE.get(csm)
        if entry is None:
            entry = (f"native-{uuid.uuid4().hex}", OrderedDict())
            _NATIVE[csm] = entry
            weakref.finalize(csm, forget, entry[0])
        model_id, built = entry
        key = (patch_key, fetch)
        model = built.get(key)
        if model is None:
            model = _build(csm, fetch, f"{model_id}:{patch_key}")
            built[key] = model
            while len(built) > MODELS_PER_NATIVE:
                built.popitem(last=False)
        built.move_to_end(key)
    return model


def _build(csm, fetch, cache_prefix: str) -> ClipModel:
    children = dict(csm.named_children())
    family = FAMILIES[family_of(list(children), type(csm).__name__)]
    shapes = {
        k: tuple(v.shape)
        for k, v in csm.state_dict(keep_vars=True).items()
        if isinstance(v, torch.Tensor) and k != "clip_l.transformer.text_projection.weight"
    }
    found = {src.family: src for src in find_text_towers(shapes)}
    name = f"ComfyUI CLIP ({type(csm).__name__})"
    towers = {}
    for child, role in TOWER_CHILDREN.items():
        if role not in family.towers:
            continue
        if role not in found:
            raise ValueError(f"{name}: no {role} text encoder weights in its state dict")
        towers[role] = NativeTower(
            found[role].config(role),
            children[child].transformer,
            fetch,
            cache_id=f"{cache_prefix}:{role}",
            source=f"{name} {child}",
        )
    towers = {role: towers[role] for role in family.towers}
    return ClipModel(family, towers, None, (name,), "auto")
