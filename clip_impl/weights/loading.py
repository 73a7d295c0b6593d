"""Load text encoders (and, for scoring, vision towers) from the files users already have.

``load_clip([file], architecture="auto")`` finds every text tower in the file(s) from key names and
shapes (``formats.py``), decides the model family (SD1.x, SD2.x, SDXL, SDXL refiner, a full CLIP),
reads only those towers' tensors, builds the towers on the meta device and assigns the weights. The
encoder blocks' matrices (most of the bytes) stay the file's memory-mapped tensors when they need no
rounding, and are copied into their storage dtype on a background thread (``pending_copies.py``): loading
returns after one read of the bytes (the NaN/inf check), and the towers compute the same numbers meanwhile.

Precision (DESIGN 5): ``auto`` rounds weights to fp16 as ComfyUI stores them and computes in fp32
(kept resident as fp32 on the CPU, which doubles their memory but skips a cast per layer and pass);
``fp32`` keeps the file's values; ``fp16``/``bf16`` store and compute in that dtype.

Loading the same file with the same settings again returns the same towers (one set of weights).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Literal, get_args

import torch

from ..clip_skip import FAMILIES, TOWER_LABELS
from .text_layouts import TowerSource, find_text_towers, to_tower_state_dict, tower_keys
from ..model import ClipModel
from ..towers.text import CLIP_L, OPENCLIP_BIGG, OPENCLIP_H, TextTower
from .assembly import (
    PRECISIONS, Precision, assemble, check_before_reading, convert_weights, dtypes_for, file_identity, shared_tower,
)
from .vision import find_vision, no_vision_message
from .files import ModelFileError, WeightReader

log = logging.getLogger(__name__)

Architecture = Literal["auto", "sd1", "sd2", "sdxl", "sdxl_refiner", "clip"]
ARCHITECTURES: tuple[Architecture, ...] = get_args(Architecture)
_EXPECTED = {"l": CLIP_L, "h": OPENCLIP_H, "g": OPENCLIP_BIGG}
_ROLE_NAMES = {"l": "CLIP-L (ViT-L/14)", "h": "OpenCLIP ViT-H/14", "g": "OpenCLIP ViT-bigG/14"}


def load_clip(
    paths,
    architecture: Architecture = "auto",
    precision: Precision = "auto",
    device: str | torch.device = "cpu",
    with_vision: bool | str = "auto",
    storage_dtype: torch.dtype | None = None,
    placement: str = "",
) -> ClipModel:
    """Load the text towers (and a vision tower, if present) of one or two files/folders.

    ``with_vision``: "auto" loads a vision tower when the files hold one (a full CLIP, or a text encoder
    plus a clip_vision file of the same CLIP), True requires one (an error says what to add), False never
    loads one. ``model.extra["vision_text"]`` names the text tower the vision tower pairs with.
    ``storage_dtype`` (optional) overrides the dtype the weights are kept in, not the compute dtype nor
    the fp16 rounding of ``auto``: a host that loads on one device and runs on another (ComfyUI: load on
    the CPU, run on the GPU) picks the storage for the device the towers will run on, and names that
    device in ``placement``: towers are shared only between loads with the same placement, so a tower
    is never asked to be on two devices at once.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r}; use one of {', '.join(ARCHITECTURES)}")
    paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    device = torch.device(device)
    dtypes_for(precision, device)
    readers = [WeightReader(p) for p in paths]
    found = [(r, src) for r in readers for src in find_text_towers(r.shapes)]
    match = None
    if with_vision:
        match = find_vision(readers, found, precision, device, storage_dtype, placement)
        if match is None and with_vision is True:
            raise ModelFileError(no_vision_message(readers))
    vision = match.tower if match is not None else None
    if not found:
        if match is not None:
            names = ", ".join(r.name for r in readers)
            raise ModelFileError(
                f"{names} holds a vision tower but no text encoder: pair it with the text encoder of the same "
                "CLIP (e.g. SDXL's clip_g with a ViT-bigG clip_vision file)"
            )
        raise ModelFileError(_no_tower_message(readers))
    _check_complete(readers, found)
    family, assignment = _assign(found, architecture, match is not None and match.full_clip)
    towers = {}
    for role, (reader, src) in assignment.items():
        _check_shape(reader, src, role, family.label)
        towers[role] = _shared_tower(reader, src, role, precision, device, storage_dtype, placement)
    model = ClipModel(family, towers, vision, tuple(paths), precision)
    if match is not None:
        model.extra["vision_text"] = match.text_role(assignment)
        model.logit_scale_source = match.logit_scale
    for tower in model.modules():  # once every tower is built, so the copies slow none of them
        tower.pending.start()
    log.info("loaded %s from %s", model.describe(), ", ".join(paths))
    return model


def _check_complete(readers, found) -> None:
    """An SDXL base checkpoint holds both encoders: one of them missing means a broken file."""
    for reader in readers:
        prefixes = {src.prefix for r, src in found if r is reader}
        sdxl_keys = any(k.startswith("conditioner.embedders.1.") for k in reader.shapes)
        if "conditioner.embedders.0.transformer." in prefixes and "conditioner.embedders.1.model." not in prefixes:
            raise ModelFileError(
                f"{reader.name} is an SDXL checkpoint (CLIP-L at conditioner.embedders.0) but its CLIP-G text "
                "encoder (conditioner.embedders.1.model.*) is missing"
                + (" or unreadable" if sdxl_keys else "")
                + "; the file is incomplete: get it again, or load clip_l/clip_g files instead"
            )


def _no_tower_message(readers) -> str:
    names = ", ".join(r.name for r in readers)
    sample = ", ".join(sorted(k for r in readers for k in r.shapes)[:3])
    return (
        f"{names}: no CLIP text encoder found (keys start like: {sample or 'no tensors'}). "
        "Expected an SD1.x/SD2.x/SDXL checkpoint, a clip_l/clip_g text encoder, a diffusers folder or a CLIP model"
    )


def _assign(found, architecture: Architecture, full_clip: bool):
    """Pick the family and map tower roles ("l", "g", "h") to sources."""
    by_role: dict[str, list] = {}
    for reader, src in found:
        by_role.setdefault(src.family, []).append((reader, src))
    for role, items in by_role.items():
        if role != "?" and len(items) > 1:
            names = " and ".join(f"{r.name}" + (f" ({s.prefix.rstrip('.')})" if s.prefix else "") for r, s in items)
            raise ModelFileError(
                f"{names} both hold a {_ROLE_NAMES[role]} text encoder; give two different encoders "
                "(SDXL needs CLIP-L + CLIP-G)"
            )
    roles = set(by_role)
    unknown = sorted(by_role.get("?", []), key=lambda rs: (rs[1].width, rs[1].layers))
    if architecture == "auto":
        architecture = _guess_architecture(roles - {"?"}, unknown, full_clip)
    family = FAMILIES[architecture]
    known = sorted(roles - {"?"})
    if family.name == "clip" and len(known) == 1:  # a full CLIP's one text tower, whichever CLIP it is
        family = replace(family, towers=(known[0],), pooled_tower=known[0])
    assignment = {}
    for role in family.towers:
        if role in by_role:
            assignment[role] = by_role[role][0]
        elif unknown:
            assignment[role] = unknown.pop(0)
        else:
            have = ", ".join(_ROLE_NAMES.get(r, "an unknown tower") for r in sorted(roles))
            need = " + ".join(_ROLE_NAMES[r] for r in family.towers)
            raise ModelFileError(f"{family.label} needs {need}; the given files hold {have}")
    extra = [r for r in roles if r != "?" and r not in family.towers]
    if extra:
        log.warning("ignoring %s: %s does not use it", ", ".join(_ROLE_NAMES[r] for r in extra), family.label)
    return family, assignment


def _guess_architecture(roles: set, unknown: list, full_clip: bool) -> str:
    """The family for towers whose roles are known, plus towers that neither position nor width place.

    Unplaced towers only occur in small test models; two towers are taken as SDXL (the narrower, or
    shallower, one is CLIP-L), one HF-layout tower as SD1.x.
    """
    if full_clip and len(roles) + len(unknown) == 1:  # a full image-text CLIP (text + vision in one file)
        return "clip"
    if len(roles) + len(unknown) == 2 and roles <= {"l", "g"}:
        return "sdxl"
    if unknown and not roles and len(unknown) == 1 and unknown[0][1].layout != "openclip":
        return "clip" if full_clip else "sd1"
    if unknown:
        reader, src = unknown[0]
        raise ModelFileError(
            f"{reader.name}: cannot tell which CLIP this {src.width}-wide text encoder is; "
            "set architecture (sd1, sd2, sdxl, sdxl_refiner)"
        )
    architecture = {
        frozenset("l"): "clip" if full_clip else "sd1",
        frozenset("h"): "sd2",
        frozenset("g"): "sdxl_refiner",
        frozenset("lg"): "sdxl",
    }.get(frozenset(roles))
    if architecture is None:
        found_txt = ", ".join(_ROLE_NAMES[r] for r in sorted(roles))
        raise ModelFileError(f"these files hold {found_txt}: no supported model uses that combination")
    return architecture


def _check_shape(reader: WeightReader, src: TowerSource, role: str, label: str) -> None:
    want = _EXPECTED[role]
    known_widths = {c.width for c in _EXPECTED.values()}
    if src.width == want.width and src.layers != want.layers:
        raise ModelFileError(
            f"{reader.name} has {src.layers} layers; {label}'s {TOWER_LABELS[role]} encoder needs "
            f"{want.layers} ({_ROLE_NAMES[role]})"
        )
    if src.width != want.width and src.width in known_widths:
        raise ModelFileError(
            f"{reader.name} holds a {src.width}-wide text encoder; {label}'s {TOWER_LABELS[role]} encoder is "
            f"{want.width} wide ({_ROLE_NAMES[role]})"
        )


def _shared_tower(reader, src, role, precision, device, storage_dtype=None, placement="") -> TextTower:
    key = ("text", file_identity(reader), src.prefix, role, precision, str(device), storage_dtype, placement)
    return shared_tower(key, lambda: build_text_tower(reader, src, role, precision, device, storage_dtype))


def build_text_tower(
    reader: WeightReader, src: TowerSource, role: str, precision: str, device, storage_dtype=None
) -> TextTower:
    """Read one tower's tensors and build it (meta device first, weights assigned, no random init).

    ``reader`` needs ``name``, ``read(keys)`` and ``config_for(prefix)`` (a :class:`WeightReader`, or
    any object that serves tensors the same way); ``storage_dtype`` overrides the precision's storage.
    """
    cfg = src.config(role)
    hf_cfg = reader.config_for(src.prefix)
    hf_cfg = hf_cfg.get("text_config") or hf_cfg  # a CLIPModel folder nests the text tower's config
    if hf_cfg.get("hidden_act") in ("gelu", "quick_gelu"):
        cfg = cfg.with_shape(activation=hf_cfg["hidden_act"])
    if hf_cfg.get("num_attention_heads"):
        cfg = cfg.with_shape(heads=int(hf_cfg["num_attention_heads"]))
    if hf_cfg.get("intermediate_size"):
        cfg = cfg.with_shape(mlp_width=int(hf_cfg["intermediate_size"]))
    where = f"{reader.name}" + (f" ({src.prefix.rstrip('.')})" if src.prefix else "")
    what = f"the {TOWER_LABELS[role]} text encoder"

    def state_dict(tensors: dict) -> dict:
        sd = to_tower_state_dict(src, tensors)
        if not src.has_projection:
            sd.pop("text_projection.weight", None)
        return sd

    keys = tower_keys(src, reader.shapes)
    config_file = reader.config_file_for(src.prefix) if hasattr(reader, "config_file_for") else None
    check_before_reading(reader, keys, state_dict, TextTower, cfg, where, what, config_file)
    sd = state_dict(reader.read(keys))
    converted = convert_weights(sd, precision, device, storage_dtype, where, defer=True)
    return assemble(TextTower, cfg, sd, converted, where, what)
