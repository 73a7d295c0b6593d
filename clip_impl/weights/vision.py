"""Find, pair and build CLIP vision towers (for image-text scoring), from key names and shapes only.

Layouts (DESIGN 6):
- ``hf``: ``<p>vision_model.embeddings.{class_embedding, patch_embedding.weight, position_embedding.weight}``,
  ``<p>vision_model.pre_layrnorm``, ``<p>vision_model.encoder.layers.N...`` (q/k/v separate),
  ``<p>vision_model.post_layernorm``, ``<p>visual_projection.weight`` ([P, C]). transformers' ``CLIPModel``
  (with ``text_model.*``, ``text_projection.weight``, ``logit_scale``), ``CLIPVisionModelWithProjection``,
  ComfyUI ``clip_vision`` files and diffusers ``image_encoder/`` folders all use it.
- ``openclip``: ``<p>visual.{conv1.weight, class_embedding, positional_embedding, ln_pre, ln_post, proj}``
  and ``<p>visual.transformer.resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``;
  ``proj`` is used as ``x @ P`` ([C, P]). OpenCLIP/OpenAI checkpoints and SD2 unCLIP's ``embedder.model.``.

The patch size comes from the conv weight, the image size from the number of positions, the width and
depth from the tensors; head count and activation from the matching preset (``vision_tower.py``), or
``config.json`` in Hugging Face folders. Sizes of no known CLIP (small test models) get 64-wide heads and
the activation of the text tower they pair with.

Pairing: a vision tower scores against the text tower of the same CLIP. In a full CLIP file that is the
file's own text tower; a ``clip_vision`` file pairs with a text encoder from the other file whose
``text_projection`` output size equals ``visual_projection``'s (e.g. SDXL's CLIP-G with ViT-bigG).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import torch

from .text_layouts import OPENCLIP_BLOCK, block_name, fuse_qkv
from .assembly import assemble, check_before_reading, convert_weights, file_identity, shared_tower
from ..towers.vision import VISION_PRESETS, VisionTower, VisionTowerConfig
from .files import ModelFileError, WeightReader

log = logging.getLogger(__name__)

_HF_MARK = "vision_model.encoder.layers.0.self_attn.q_proj.weight"
_OPENCLIP_MARK = "visual.transformer.resblocks.0.attn.in_proj_weight"
# Head count and activation of the known vision widths: OpenAI ViT-B and ViT-L use quick_gelu, OpenCLIP
# ViT-H and ViT-bigG use gelu.
_WIDTH_DEFAULTS = {768: (12, "quick_gelu"), 1024: (16, "quick_gelu"), 1280: (16, "gelu"), 1664: (16, "gelu")}
# Text width -> vision widths of the same CLIP (B: 512/768, L: 768/1024, H and g: 1024/1280 or 1408,
# bigG: 1280/1664). Used to refuse pairs of known sizes that belong to different CLIPs.
_SAME_CLIP = {512: {768}, 768: {1024}, 1024: {1280, 1408}, 1280: {1664}}
_KNOWN_VISION_WIDTHS = set().union(*_SAME_CLIP.values())
# CLIP clamps logit_scale at ln(100) in training; past 30 exp() gives 1e13 and more (float32 overflows at 88).
MAX_LOGIT_SCALE = 30.0


def _shape(cfg) -> tuple:
    """What the tensors tell about a tower: (width, layers, patch, image size, MLP width)."""
    return (cfg.width, cfg.layers, cfg.patch, cfg.image_size, cfg.mlp_width)


@dataclass(frozen=True)
class VisionSource:
    """A vision tower found in a file: layout, key prefix and shape."""

    layout: str  # "hf" or "openclip"
    prefix: str  # hf: before "vision_model."; openclip: up to and including "visual."
    width: int
    layers: int
    mlp_width: int
    patch: int
    image_size: int
    projection_dim: int | None

    def config(self, hf_config: dict | None = None, activation: str = "quick_gelu") -> VisionTowerConfig:
        """The tower config: a preset when the shape is a known CLIP's, with config.json overrides.

        ``activation`` is used for sizes of no known CLIP: the paired text tower's (a CLIP uses one
        activation in both towers)."""
        shape = _shape(self)
        preset = next((p for p in VISION_PRESETS if _shape(p) == shape), None)
        if preset is not None:
            cfg = preset.with_shape(projection_dim=self.projection_dim)
        else:
            heads, act = _WIDTH_DEFAULTS.get(self.width, (max(1, self.width // 64), activation))
            name = f"ViT {self.width}x{self.layers} /{self.patch} {self.image_size}px"
            cfg = VisionTowerConfig(
                name=name, width=self.width, layers=self.layers, heads=heads, mlp_width=self.mlp_width,
                patch=self.patch, image_size=self.image_size, activation=act, projection_dim=self.projection_dim,
            )
        hf = (hf_config or {}).get("vision_config") or hf_config or {}
        if hf.get("hidden_act") in ("gelu", "quick_gelu"):
            cfg = cfg.with_shape(activation=hf["hidden_act"])
        if hf.get("num_attention_heads"):
            cfg = cfg.with_shape(heads=int(hf["num_attention_heads"]))
        return cfg


@dataclass
class VisionMatch:
    """What :func:`find_vision` returns: the built tower, the text tower it pairs with, and whether both
    come from one full image-text CLIP file (then the model family is ``clip``)."""

    tower: VisionTower | None  # None when the files hold no text encoder (nothing to pair with)
    text: tuple  # (WeightReader, TowerSource) of the paired text tower
    full_clip: bool
    logit_scale: object = None  # full CLIPs: a callable reading the file's logit_scale when first needed

    def text_role(self, assignment: dict) -> str:
        """The tower key ("l", "g", "h") the paired text tower got in the loaded model."""
        reader, src = self.text
        for role, (r, s) in assignment.items():
            if r is reader and s.prefix == src.prefix:
                return role
        raise ModelFileError(
            f"{reader.name}: the text encoder that pairs with the vision tower {self.tower.source} is not part of the "
            "chosen architecture; set architecture to auto (or clip)"
        )


def _layer_count(keys, pattern: re.Pattern) -> int:
    found = [int(m.group(1)) for k in keys if (m := pattern.match(k))]
    return max(found) + 1 if found else 0


@dataclass(frozen=True)
class _VisionLayout:
    """Where one key layout keeps what identifies a CLIP vision tower (names relative to its prefix)."""

    name: str  # "hf" or "openclip"
    mark: str  # the key whose presence finds a tower; what comes before it is the file's prefix
    base: str  # added to that prefix: what the other names below are relative to
    cls: str
    conv: str
    pos: str
    fc1: str
    layers: str  # regex of a layer's keys, group 1 = the layer index
    proj: str
    proj_axis: int  # the projection's output size is shape[proj_axis] (HF [P, C], OpenCLIP [C, P])


_LAYOUTS = (
    _VisionLayout(
        "hf", _HF_MARK, "", "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.position_embedding.weight",
        "vision_model.encoder.layers.0.mlp.fc1.weight", r"vision_model\.encoder\.layers\.(\d+)\.",
        "visual_projection.weight", 0,
    ),
    _VisionLayout(
        "openclip", _OPENCLIP_MARK, "visual.", "class_embedding", "conv1.weight", "positional_embedding",
        "transformer.resblocks.0.mlp.c_fc.weight", r"transformer\.resblocks\.(\d+)\.", "proj", 1,
    ),
)


def find_vision_sources(shapes: dict) -> list[VisionSource]:
    """Every vision tower in a key -> shape table."""
    out = []
    for key in sorted(shapes):
        layout = next((lay for lay in _LAYOUTS if key.endswith(lay.mark)), None)
        if layout is None:
            continue
        prefix = key[: -len(layout.mark)] + layout.base  # hf: before "vision_model."; openclip: "...visual."
        names = {part: prefix + getattr(layout, part) for part in ("cls", "conv", "pos", "fc1")}
        if not all(n in shapes for n in names.values()):
            continue  # a ViT without CLIP's class token / conv stem (e.g. timm or DINO): not ours
        conv, pos, cls = shapes[names["conv"]], shapes[names["pos"]], shapes[names["cls"]]
        if len(pos) != 2 or len(cls) != 1 or len(shapes[names["fc1"]]) != 2 or pos[0] < 2:
            continue  # not CLIP's shapes (a corrupt header): no tower here
        positions = pos[0]
        grid = math.isqrt(positions - 1)
        if len(conv) != 4 or conv[1] != 3 or conv[2] != conv[3] or grid * grid != positions - 1:
            continue
        proj = shapes.get(prefix + layout.proj)
        proj = proj if proj is not None and len(proj) == 2 else None
        layers = _layer_count(shapes, re.compile(re.escape(prefix) + layout.layers))
        out.append(
            VisionSource(
                layout.name, prefix, shapes[names["cls"]][0], layers, shapes[names["fc1"]][0], conv[2],
                grid * conv[2], proj[layout.proj_axis] if proj else None,
            )
        )
    return out


def find_vision(
    readers: list[WeightReader], found_text_towers: list, precision: str, device, storage_dtype=None, placement=""
) -> VisionMatch | None:
    """The vision tower in ``readers`` (None if there is none), paired with one of ``found_text_towers``
    ((reader, TowerSource) pairs) and built. Raises ModelFileError for two vision towers, a pair from
    different CLIPs, or a text tower without ``text_projection``."""
    sources = [(r, s) for r in readers for s in find_vision_sources(r.shapes)]
    if not sources:
        return None
    if len(sources) > 1:
        names = " and ".join(f"{r.name}" + (f" ({s.prefix.rstrip('.')})" if s.prefix else "") for r, s in sources)
        raise ModelFileError(
            f"{names} hold two vision towers; give one full CLIP, or one text encoder + one clip_vision file"
        )
    reader, src = sources[0]
    where = reader.name + (f" ({src.prefix.rstrip('.')})" if src.prefix else "")
    if src.projection_dim is None:
        raise ModelFileError(
            f"{where}: the vision tower has no visual_projection, so its images cannot be compared with text; "
            "use a clip_vision file saved with its projection (CLIPVisionModelWithProjection) or the full CLIP"
        )
    if not found_text_towers:
        # Nothing to score against: load_clip reports "a vision tower but no text encoder" (nothing is built).
        return VisionMatch(None, (None, None), False)
    text = _pair(reader, src, where, found_text_towers)
    # A full CLIP keeps text and vision side by side (HF: one prefix; OpenCLIP: "visual." under the text's).
    # An SD2 unCLIP checkpoint also holds both, at unrelated prefixes: it stays an SD2.x model.
    full_clip = text[0] is reader and src.prefix in (text[1].prefix, text[1].prefix + "visual.")
    cfg = src.config(reader.config_for(src.prefix), _text_activation(*text))
    tower = _shared_vision(reader, src, cfg, precision, device, storage_dtype, placement)
    return VisionMatch(tower, text, full_clip, logit_scale_reader(reader, src) if full_clip else None)


def logit_scale_reader(reader: WeightReader, src: VisionSource):
    """A callable giving a full CLIP's ``logit_scale`` (log of the factor on cosines, e.g. log(100) =
    4.6052) when first asked for, or None when the file has none. Loading reads only the towers.

    HF ``CLIPModel`` keeps it beside ``vision_model.``, OpenCLIP beside ``visual.``; either way at the
    vision source's prefix without ``visual.``.
    """
    prefix = src.prefix[: -len("visual.")] if src.prefix.endswith("visual.") else src.prefix
    key = prefix + "logit_scale"
    if reader.shapes.get(key) not in ((), (1,)):
        return None
    tensor, name = reader.deferred(key), reader.name

    def read() -> float:
        value = tensor().float().reshape(())
        if not bool(torch.isfinite(value)) or abs(float(value)) > MAX_LOGIT_SCALE:
            raise ModelFileError(
                f"{name}: logit_scale is {float(value)}; CLIP's is at most ln(100) = 4.61 (its exp multiplies the "
                f"cosines; past {MAX_LOGIT_SCALE} the logits overflow): the file is corrupt"
            )
        return float(value)

    return read


def _text_activation(reader: WeightReader, src) -> str:
    """The activation the loader will give the paired text tower (its preset, or its config.json)."""
    hf = reader.config_for(src.prefix)
    hf = hf.get("text_config") or hf
    if hf.get("hidden_act") in ("gelu", "quick_gelu"):
        return hf["hidden_act"]
    return src.config(src.family if src.family != "?" else "l").activation


def _widths_agree(text_width: int, vision_width: int) -> bool:
    if text_width in _SAME_CLIP and vision_width in _KNOWN_VISION_WIDTHS:
        return vision_width in _SAME_CLIP[text_width]
    return True  # sizes of no known CLIP (e.g. test models): only the projection size can tell


def _pair(reader: WeightReader, src: VisionSource, where: str, found: list) -> tuple:
    """The text tower of the same CLIP: the file's own text tower for a full CLIP, else any other."""
    own = [(r, s) for r, s in found if r is reader]
    candidates = own or found
    agree = [(r, s) for r, s in candidates if _widths_agree(s.width, src.width)]
    for r, s in agree:
        if s.has_projection and s.projection_dim == src.projection_dim:
            return r, s
    without = [(r, s) for r, s in agree if not s.has_projection]
    if without:
        r, s = without[0]
        text_where = r.name + (f" ({s.prefix.rstrip('.')})" if s.prefix else "")
        raise ModelFileError(
            f"{text_where}: its {s.width}-wide text encoder has no text_projection, so it cannot be scored against "
            f"the vision tower of {where}. SD1.x/SDXL checkpoints drop CLIP-L's text_projection; use a standalone "
            "text encoder that keeps it (e.g. ComfyUI's clip_l.safetensors) or the full CLIP model"
        )
    texts = ", ".join(
        f"{r.name}" + (f" ({s.prefix.rstrip('.')})" if s.prefix else "")
        + f": {s.width}-wide text encoder, projection {s.projection_dim or 'none'}"
        for r, s in candidates
    )
    raise ModelFileError(
        f"the vision tower of {where} ({src.width} wide, projection {src.projection_dim}) and the text encoder "
        f"({texts}) are not the same CLIP; pair a clip_vision file with the text encoder of its own CLIP "
        "(ViT-L/14 with clip_l, ViT-H/14 with SD2's OpenCLIP-H, ViT-bigG/14 with SDXL's clip_g)"
    )


def _shared_vision(reader, src, cfg, precision, device, storage_dtype=None, placement="") -> VisionTower:
    key = ("vision", file_identity(reader), src.prefix, cfg, precision, str(torch.device(device)), storage_dtype,
           placement)
    return shared_tower(key, lambda: build_vision_tower(reader, src, precision, device, cfg, storage_dtype))


def vision_keys(src: VisionSource, keys) -> list[str]:
    """The keys of ``keys`` that belong to the vision tower."""
    if src.layout == "openclip":
        return [k for k in keys if k.startswith(src.prefix)]
    wanted = (src.prefix + "vision_model.", src.prefix + "visual_projection.")
    return [k for k in keys if k.startswith(wanted) and not k.endswith("position_ids")]


_OPENCLIP_TOP = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}


def to_vision_state_dict(src: VisionSource, tensors: dict) -> dict:
    """Rename a vision tower's tensors (keyed by full file key) to :class:`VisionTower` names."""
    out = {}
    for key, t in tensors.items():
        name = key[len(src.prefix) :]
        if src.layout == "hf":
            out[name] = t
        elif name == "proj":
            out["visual_projection.weight"] = t.t().contiguous()  # OpenCLIP uses x @ P
        elif name in _OPENCLIP_TOP:
            out[_OPENCLIP_TOP[name]] = t
        elif m := re.match(r"transformer\.resblocks\.(\d+)\.(.+)$", name):
            out[f"vision_model.encoder.layers.{m.group(1)}.{block_name(m.group(2), OPENCLIP_BLOCK)}"] = t
        else:
            out["visual." + name] = t  # unknown part (e.g. attention pooling): strict loading names it
    return fuse_qkv(out)


def build_vision_tower(
    reader: WeightReader, src: VisionSource, precision: str, device, cfg=None, storage_dtype=None
) -> VisionTower:
    """Read the vision tower's tensors and build it (meta device first, weights assigned, no random init)."""
    cfg = cfg or src.config(reader.config_for(src.prefix))
    where = reader.name + (f" ({src.prefix.rstrip('.')})" if src.prefix else "")
    what = f"the {cfg.name} vision tower"
    keys = vision_keys(src, reader.shapes)
    check_before_reading(reader, keys, lambda t: to_vision_state_dict(src, t), VisionTower, cfg, where, what,
                         reader.config_file_for(src.prefix))
    sd = to_vision_state_dict(src, reader.read(keys))
    converted = convert_weights(sd, precision, device, storage_dtype, where, defer=True)
    # OpenCLIP stores the class embedding as (C,) and positions as (N, C), as HF does; the conv has no bias.
    tower = assemble(VisionTower, cfg, sd, converted, where, what)
    log.info("vision tower %s from %s", cfg.name, where)
    return tower


def no_vision_message(readers: list[WeightReader]) -> str:
    names = ", ".join(r.name for r in readers)
    return (
        f"{names}: no CLIP vision tower found, so images cannot be scored. Give a full CLIP model "
        "(e.g. openai/clip-vit-large-patch14), or a text encoder plus the clip_vision file of the same CLIP "
        "(clip_l + ViT-L/14, clip_g + ViT-bigG/14)"
    )


def vision_in_dtype(vision: VisionTower, dtype: torch.dtype) -> VisionTower:
    """A copy of ``vision`` stored and computed in ``dtype`` (e.g. bf16 for fast image scoring while the text
    tower stays fp32); the original, which loaders share, is left as it is."""
    vision.pending.settle()  # never share the original's file-mapped tensors
    with torch.device("meta"):
        tower = VisionTower(vision.config, source=vision.source, compute_dtype=dtype)
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in vision.state_dict().items()}
    tower.load_state_dict(sd, strict=True, assign=True)
    return tower.eval().requires_grad_(False)
