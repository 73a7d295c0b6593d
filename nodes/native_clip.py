"""Turn ComfyUI's own ``CLIP`` object into our text towers (no ComfyUI import: it works on the object).

A native ``CLIP`` keeps its text encoders in ``clip.cond_stage_model``, one child per tower: ``clip_l``
(SD1.x, SDXL), ``clip_g`` (SDXL, refiner), ``clip_h`` (SD2.x). Its state dict uses HF names under
``clip_l.transformer.`` etc., which ``clip_impl.formats.find_text_towers`` reads like any file. The
weights are copied (never shared) into our towers and computed in fp32, as ComfyUI computes them.

CLIP-L's ``text_projection`` is never read: SD1.x conditioning uses the unprojected pooled vector, SDXL
pools from CLIP-G, and ComfyUI leaves that weight uninitialised when a checkpoint does not hold it.
"""

from __future__ import annotations

import torch

from ..clip_impl.clip_skip import FAMILIES, from_set_last_layer
from ..clip_impl.formats import find_text_towers
from ..clip_impl.loading import build_text_tower
from ..clip_impl.model import ClipModel
from ..clip_impl.weight_files import ModelFileError

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


class StateDictReader:
    """Serves a state dict the way :class:`clip_impl.weight_files.WeightReader` serves a file."""

    def __init__(self, state: dict, name: str):
        self.name = name
        self.configs: dict = {}
        self._state = state
        self.shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}

    def read(self, keys) -> dict:
        # Copies on the CPU: the native model's parameters must never be shared with (or changed by) ours.
        return {k: self._state[k].detach().to("cpu", copy=True) for k in keys}

    def config_for(self, prefix: str) -> dict:
        return {}


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


def native_dtype(csm) -> torch.dtype:
    """The dtype ComfyUI stores the text encoder weights in."""
    return next(p.dtype for n, p in csm.named_parameters() if "token_embedding" in n)


def model_from_state_dict(
    state: dict, children, class_name: str, device="cpu", storage_dtype: torch.dtype | None = None
) -> ClipModel:
    """A ClipModel from a native state dict (``clip_l.transformer.text_model...``), values kept exactly."""
    family = FAMILIES[family_of(children, class_name)]
    state = {k: v for k, v in state.items() if k != "clip_l.transformer.text_projection.weight"}
    reader = StateDictReader(state, f"ComfyUI CLIP ({class_name})")
    found = {src.family: src for src in find_text_towers(reader.shapes)}
    towers = {}
    for role in family.towers:
        if role not in found:
            raise ModelFileError(f"{reader.name}: no {role} text encoder weights in its state dict")
        # fp32 keeps the native values (already rounded to ComfyUI's dtype, LoRA patches included).
        towers[role] = build_text_tower(reader, found[role], role, "fp32", device, storage_dtype)
    return ClipModel(family, towers, None, (reader.name,), "auto")


def model_from_native(csm, device="cpu", storage_dtype: torch.dtype | None = None) -> ClipModel:
    """Copy the towers of a loaded native ``cond_stage_model`` (patched weights as they are now)."""
    children = [n for n, _ in csm.named_children()]
    return model_from_state_dict(csm.state_dict(), children, type(csm).__name__, device, storage_dtype)


def native_layer_note(native_layer: int | None, family_name: str, clip_skip: int) -> str | None:
    """Status note when the input CLIP carries a CLIPSetLastLayer setting, which our clip_skip overrides."""
    if native_layer is None:
        return None
    same = from_set_last_layer(FAMILIES[family_name], native_layer)
    verdict = "same layer" if same == clip_skip else f"that would be clip_skip {same}"
    return (
        f"input CLIP has CLIPSetLastLayer {native_layer}: ignored, clip_skip {clip_skip} decides the layer "
        f"({verdict})"
    )
