"""Where text towers live inside model files, and how their keys map to ours.

Works on key names and shapes only (no tensor data), so a loader can decide what to read before reading
it. Layouts (DESIGN 6):

- ``hf``: transformers names under a prefix: ``<p>text_model.embeddings...``, ``<p>text_projection.weight``
  (SD1.x ``cond_stage_model.transformer.``, SDXL ``conditioner.embedders.0.transformer.``, standalone
  ``clip_l``/``clip_g`` files, diffusers ``text_encoder*/``, ComfyUI's ``clip_l.transformer.`` state dicts).
- ``hf_bare``: old SD1.x checkpoints without the ``text_model.`` level (``cond_stage_model.transformer.
  encoder.layers...``).
- ``openclip``: ``<p>transformer.resblocks.N.attn.in_proj_weight`` etc. (SD2.x ``cond_stage_model.model.``,
  SDXL ``conditioner.embedders.1.model.``, the refiner's ``conditioner.embedders.0.model.``, OpenCLIP files).

A tower's family (CLIP-L, OpenCLIP H or bigG) is told by where it sits and by its width and depth,
never by the file name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..towers.text import CLIP_L, HEAD_WIDTH, OPENCLIP_BIGG, OPENCLIP_H, TextTowerConfig

_HF_MARK = "text_model.encoder.layers.0.self_attn.q_proj.weight"
_HF_BARE_MARK = "encoder.layers.0.self_attn.q_proj.weight"
_OPENCLIP_MARK = "transformer.resblocks.0.attn.in_proj_weight"
_FAMILY_BY_WIDTH = {768: "l", 1024: "h", 1280: "g"}
_PRESETS = {"l": CLIP_L, "h": OPENCLIP_H, "g": OPENCLIP_BIGG}
# Prefix fragments that say which tower a checkpoint holds where (SD/SDXL/ComfyUI conventions).
_ROLE_HINTS = (
    ("conditioner.embedders.0.transformer.", "l"),
    ("conditioner.embedders.1.model.", "g"),
    ("conditioner.embedders.0.model.", "g"),  # SDXL refiner
    ("cond_stage_model.transformer.", "l"),
    ("cond_stage_model.model.", "h"),
    ("clip_l.", "l"),
    ("clip_g.", "g"),
    ("clip_h.", "h"),
)


@dataclass(frozen=True)
class TowerSource:
    """A text tower found in a file: its layout, key prefix, family and shape."""

    layout: str  # "hf", "hf_bare" or "openclip"
    prefix: str
    family: str  # "l", "h", "g", or "?" when neither position nor width tells (small test models)
    width: int
    layers: int
    has_projection: bool
    projection_dim: int | None = None

    def config(self, family: str | None = None) -> TextTowerConfig:
        """The tower config: the family preset, reshaped to the file's width/depth (tiny test models)."""
        fam = family or self.family
        if fam not in _PRESETS:
            raise ValueError(f"unknown text tower family {fam!r}")
        preset = _PRESETS[fam]
        if (self.width, self.layers) == (preset.width, preset.layers):
            return preset if self.has_projection else preset.with_shape(projection_dim=None)
        return preset.with_shape(
            width=self.width,
            layers=self.layers,
            heads=max(1, self.width // HEAD_WIDTH),
            mlp_width=self.width * 4,
            projection_dim=self.projection_dim,
        )


def _layer_count(keys, pattern: re.Pattern) -> int:
    found = [int(m.group(1)) for k in keys if (m := pattern.match(k))]
    return max(found) + 1 if found else 0


def _family(prefix: str, layout: str, width: int) -> str:
    for hint, fam in _ROLE_HINTS:
        if hint in prefix:
            return fam
    return _FAMILY_BY_WIDTH.get(width, "?")


def find_text_towers(shapes: dict[str, tuple[int, ...]]) -> list[TowerSource]:
    """Every text tower in a key -> shape table, in key order of their prefixes."""
    towers = []
    for key in sorted(shapes):
        if key.endswith(_HF_MARK):
            prefix, layout = key[: -len(_HF_MARK)], "hf"
        elif key.endswith(_OPENCLIP_MARK) and not key.endswith("visual." + _OPENCLIP_MARK):
            prefix, layout = key[: -len(_OPENCLIP_MARK)], "openclip"
            if prefix + "token_embedding.weight" not in shapes:
                continue
        elif key.endswith(_HF_BARE_MARK) and not key.endswith(_HF_MARK):
            prefix, layout = key[: -len(_HF_BARE_MARK)], "hf_bare"
            if prefix + "embeddings.token_embedding.weight" not in shapes or "vision_model" in prefix:
                continue
        else:
            continue
        tower = _describe(shapes, prefix, layout)
        if tower is not None:
            towers.append(tower)
    return towers


def _describe(shapes, prefix: str, layout: str) -> TowerSource | None:
    """The tower at ``prefix``; None when its token table or projection is not 2-D (a corrupt header)."""
    keys = [k for k in shapes if k.startswith(prefix)]
    if layout == "openclip":
        table = shapes[prefix + "token_embedding.weight"]
        layers = _layer_count(keys, re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\."))
        proj = shapes.get(prefix + "text_projection")
        axis = 1
    else:
        base = prefix + ("text_model." if layout == "hf" else "")
        table = shapes.get(base + "embeddings.token_embedding.weight", ())
        layers = _layer_count(keys, re.compile(re.escape(base) + r"encoder\.layers\.(\d+)\."))
        proj = shapes.get(prefix + "text_projection.weight")
        axis = 0
    if len(table) != 2 or (proj is not None and len(proj) != 2):
        return None
    width = table[1]
    proj_dim = proj[axis] if proj else None
    return TowerSource(layout, prefix, _family(prefix, layout, width), width, layers, proj is not None, proj_dim)


def tower_keys(src: TowerSource, keys) -> list[str]:
    """The keys of ``keys`` that belong to the tower (what a loader needs to read)."""
    if src.layout == "openclip":
        wanted = ("token_embedding.", "positional_embedding", "transformer.resblocks.", "ln_final.", "text_projection")
        return [k for k in keys if k.startswith(src.prefix) and k[len(src.prefix) :].startswith(wanted)]
    if src.layout == "hf":
        wanted = ("text_model.", "text_projection.")
        return [k for k in keys if k.startswith(src.prefix) and k[len(src.prefix) :].startswith(wanted)]
    wanted = ("embeddings.", "encoder.layers.", "final_layer_norm.")
    return [k for k in keys if k.startswith(src.prefix) and k[len(src.prefix) :].startswith(wanted)]


OPENCLIP_BLOCK = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.in_proj_weight": "self_attn.in_proj.weight",
    "attn.in_proj_bias": "self_attn.in_proj.bias",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


def to_tower_state_dict(src: TowerSource, tensors: dict) -> dict:
    """Rename a tower's tensors (as read from the file, keyed by full key) to :class:`TextTower` names."""
    p = src.prefix
    out = {}
    if src.layout == "openclip":
        for key, t in tensors.items():
            name = key[len(p) :]
            if name == "token_embedding.weight":
                out["text_model.embeddings.token_embedding.weight"] = t
            elif name == "positional_embedding":
                out["text_model.embeddings.position_embedding.weight"] = t
            elif name.startswith("ln_final."):
                out["text_model.final_layer_norm." + name[len("ln_final.") :]] = t
            elif name == "text_projection":
                out["text_projection.weight"] = t.t().contiguous()  # OpenCLIP uses x @ P
            elif m := re.match(r"transformer\.resblocks\.(\d+)\.(.+)$", name):
                out[f"text_model.encoder.layers.{m.group(1)}.{block_name(m.group(2), OPENCLIP_BLOCK)}"] = t
        return out
    base = "text_model." if src.layout == "hf" else ""
    for key, t in tensors.items():
        name = key[len(p) :]
        if name.startswith("text_projection."):
            out[name] = t
        elif name.startswith(base) and not name.endswith("position_ids"):
            out["text_model." + name[len(base) :]] = t
    return fuse_qkv(out)


def block_name(name: str, table: dict) -> str:
    for old, new in table.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    return name


def fuse_qkv(sd: dict) -> dict:
    """Stack HF ``q_proj``/``k_proj``/``v_proj`` into one ``in_proj`` (q rows first), in place.

    The fused entry is the list of its parts: ``tower_build.convert_weights`` writes them straight into the
    converted tensor, so the file's dtype is never stacked in an extra copy.
    """
    for key in [k for k in sd if ".self_attn.q_proj." in k]:
        head, tail = key.split(".self_attn.q_proj.")
        sd[f"{head}.self_attn.in_proj.{tail}"] = [sd.pop(f"{head}.self_attn.{n}_proj.{tail}") for n in "qkv"]
    return sd
