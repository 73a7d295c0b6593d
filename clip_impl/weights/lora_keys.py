"""Text-encoder LoRA files: read the text-encoder modules of a LoRA in any key style (reading only).

Key styles (module name + suffix; ComfyUI accepts every suffix with every name style):

- kohya: ``lora_te_`` (SD1.x, SD2.x; SDXL's CLIP-L; the refiner's CLIP-G), ``lora_te1_``/``lora_te2_``
  (SDXL CLIP-L/CLIP-G), ``lora_prior_te_``, then ``text_model_encoder_layers_N_self_attn_q_proj`` etc.;
  factors ``.lora_up.weight``/``.lora_down.weight``, scale ``.alpha``. OneTrainer's
  ``lora_te2_text_projection`` patches CLIP-G's projection.
- diffusers/PEFT: ``text_encoder.`` / ``text_encoder_2.`` + ``text_model.encoder.layers.N.self_attn.q_proj``
  with ``.lora_A.weight`` (down) / ``.lora_B.weight`` (up) (also ``.lora.down/up``,
  ``.lora_linear_layer.down/up``, ``.lora_A/B.default``).
- ComfyUI's generic ``text_encoders.clip_l.transformer.text_model.encoder.layers.N...``.

Placing and applying the modules is :mod:`.lora_patch`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .files import ModelFileError, WeightReader


# (up suffix, down suffix) pairs, as ComfyUI's LoRAAdapter.load accepts them.
FACTOR_SUFFIXES = (
    (".lora_up.weight", ".lora_down.weight"),
    (".lora_B.weight", ".lora_A.weight"),
    (".lora_B.default.weight", ".lora_A.default.weight"),
    (".lora.up.weight", ".lora.down.weight"),
    ("_lora.up.weight", "_lora.down.weight"),
    (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"),
    (".lora_B", ".lora_A"),
)
# Adapters ComfyUI also applies that this loader does not (LoHa, LoKr, DoRA, full diffs, GLoRA, OFT...).
OTHER_ADAPTER_MARKS = (".hada_", ".lokr_", ".dora_scale", ".diff", ".set_weight", ".w_norm", ".b_norm",
                       ".a1.weight", ".b1.weight", ".oft_", ".lora_mid.", ".reshape_weight")
_TARGETS = {  # the name's tail in each style -> our target
    "self_attn_q_proj": "q", "self_attn_k_proj": "k", "self_attn_v_proj": "v", "self_attn_out_proj": "out",
    "mlp_fc1": "fc1", "mlp_fc2": "fc2",
    "self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v", "self_attn.out_proj": "out",
    "mlp.fc1": "fc1", "mlp.fc2": "fc2",
}
_KOHYA = re.compile(r"^lora_(te\d?|prior_te)_text_model_encoder_layers_(\d+)_([a-z_0-9]+)$")
_KOHYA_PROJECTION = re.compile(r"^lora_(te2|prior_te)_text_projection$")
_DIFFUSERS = re.compile(r"^(text_encoder(?:_2)?)\.text_model\.encoder\.layers\.(\d+)\.([a-z_.0-9]+)$")
_GENERIC = re.compile(r"^text_encoders\.(clip_[lgh])\.transformer\.text_model\.encoder\.layers\.(\d+)\.([a-z_.0-9]+)$")
_TEXT_ENCODER_PREFIXES = ("lora_te", "lora_prior_te", "text_encoder", "text_encoders.")


@dataclass(frozen=True, eq=False)
class LoraModule:
    """One Linear layer the file patches: up (out, r), down (r, in), alpha (None: alpha = r)."""

    name: str  # the module's name in the file, without the factor suffix
    encoder: str  # te, te1, te2, prior_te, text_encoder, text_encoder_2, clip_l/clip_g/clip_h
    layer: int | None  # None for the text projection
    target: str  # q, k, v, out, fc1, fc2, proj
    up: torch.Tensor
    down: torch.Tensor
    alpha: float | None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        """alpha / rank, or 1 without alpha (ComfyUI's rule)."""
        return 1.0 if self.alpha is None else self.alpha / self.rank


@dataclass(eq=False)
class TextEncoderLora:
    """The text-encoder part of a LoRA file."""

    path: Path
    key: str  # file identity (path, size, mtime) for caches
    modules: list[LoraModule]
    other_keys: list[str] = field(default_factory=list)  # keys for other parts of the model (UNet, ...)
    unused: list[str] = field(default_factory=list)  # text-encoder keys that patch nothing we know

    @property
    def name(self) -> str:
        return self.path.name


def _split_suffix(key: str) -> tuple[str, str, str] | None:
    """(module name, "up"/"down"/"alpha", suffix) for a LoRA factor or alpha key; None otherwise."""
    if key.endswith(".alpha"):
        return key[: -len(".alpha")], "alpha", ".alpha"
    for up, down in FACTOR_SUFFIXES:
        for suffix, part in ((up, "up"), (down, "down")):
            if key.endswith(suffix):
                return key[: -len(suffix)], part, suffix
    return None


def _parse_name(name: str) -> tuple[str, int | None, str] | None:
    """(encoder, layer, target) of a text-encoder module name in any supported style; None otherwise."""
    if m := _KOHYA_PROJECTION.match(name):
        return m.group(1), None, "proj"
    for pattern in (_KOHYA, _DIFFUSERS, _GENERIC):
        m = pattern.match(name)
        if m and m.group(3) in _TARGETS:
            encoder = m.group(1)
            return encoder, int(m.group(2)), _TARGETS[m.group(3)]
    return None


def is_text_encoder_key(key: str) -> bool:
    return key.startswith(_TEXT_ENCODER_PREFIXES)


def read_lora(path: str | Path) -> TextEncoderLora:
    """Read a LoRA file's text-encoder modules (only those tensors are read from a .safetensors file).

    Raises :class:`ModelFileError` (naming the file) for unreadable files, files that are no LoRA, and
    text-encoder parts in a format this loader does not apply (LoHa, LoKr, DoRA, ...).
    """
    reader = WeightReader(path)
    st = reader.path.stat()
    key = f"{reader.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    groups: dict[str, dict[str, str]] = {}
    other, unused, foreign = [], [], []
    for k in sorted(reader.shapes):
        split = _split_suffix(k)
        if not is_text_encoder_key(k):
            other.append(k)
        elif any(mark in k for mark in OTHER_ADAPTER_MARKS):
            foreign.append(k)
        elif split is None or _parse_name(split[0]) is None:
            unused.append(k)
        else:
            groups.setdefault(split[0], {})[split[1]] = k
    if foreign:
        raise ModelFileError(
            f"LoRA {reader.path}: its text-encoder part is not a plain LoRA (keys like {foreign[0]}: LoHa, LoKr, "
            "DoRA or full weight differences), which CLIP Suite's LoRA loader does not apply. Apply it with "
            "ComfyUI's LoraLoader to a ComfyUI CLIP and connect that CLIP to CLIP Suite's encoders"
        )
    if not groups and not any(_split_suffix(k) or "hada_" in k or "lokr_" in k for k in other):
        sample = ", ".join(sorted(reader.shapes)[:3]) or "no tensors"
        raise ModelFileError(
            f"{reader.path} is not a LoRA (keys start like: {sample}); pick a LoRA file from the loras folder"
        )
    modules = []
    wanted = [k for g in groups.values() if "up" in g and "down" in g for k in g.values()]
    tensors = reader.read(wanted)
    for name, g in groups.items():
        if "up" not in g or "down" not in g:
            unused += list(g.values())
            continue
        encoder, layer, target = _parse_name(name)
        up, down = tensors[g["up"]], tensors[g["down"]]
        if up.dim() != 2 or down.dim() != 2 or up.shape[1] != down.shape[0]:
            raise ModelFileError(
                f"LoRA {reader.path}: {name} has factors of shapes {tuple(up.shape)} and {tuple(down.shape)}, "
                "which do not multiply to a Linear weight; the file is corrupt or not a text-encoder LoRA"
            )
        if up.shape[1] == 0 or not up.is_floating_point() or not down.is_floating_point():
            raise ModelFileError(
                f"LoRA {reader.path}: {name} has factors of shapes {tuple(up.shape)} and {tuple(down.shape)} "
                f"({up.dtype}, {down.dtype}); a LoRA needs float factors of rank 1 or more. The file is corrupt"
            )
        alpha = _alpha(reader.path, name, tensors[g["alpha"]]) if "alpha" in g else None
        modules.append(LoraModule(name, encoder, layer, target, up, down, alpha))
    return TextEncoderLora(reader.path, key, modules, other, unused)


def _alpha(path: Path, name: str, t: torch.Tensor) -> float:
    """A module's alpha: one finite number (a scalar or a one-element tensor); ModelFileError otherwise."""
    value = float(t.float().item()) if t.numel() == 1 else None
    if value is None or not math.isfinite(value):
        what = f"is {value}" if value is not None else f"holds {t.numel()} values (shape {tuple(t.shape)})"
        raise ModelFileError(f"LoRA {path}: {name}.alpha {what}; alpha is one finite number. The file is corrupt")
    return value
