"""Model families and the CLIP-skip convention: which layer each text tower uses, and with which norm.

``clip_skip`` counts layers skipped beyond the family's native layer (DESIGN 4, the diffusers
convention): 0 is always what the model was trained with.

| family | towers | native layer | final LayerNorm on the selected layer |
| --- | --- | --- | --- |
| SD1.x | CLIP-L | final (12) | yes |
| SD2.x | OpenCLIP H | penultimate (23); -1 gives 24 | yes |
| SDXL | CLIP-L + bigG | penultimate (11, 31); -1 gives the raw final layer | no |
| SDXL refiner | bigG | penultimate (31) | no |

Translations (one function each below; the nodes, the CLI, the web page and the infotext reader ask them):

| tool setting | SD1.x | SD2.x | SDXL (both towers unless said) |
| --- | --- | --- | --- |
| ComfyUI ``CLIPSetLastLayer`` -N | N-1 | N-2 | N-2 |
| A1111 "Clip skip: N" | N-1 | 0 (the slider does nothing) | 0; with ``sdxl_clip_l_skip``: N-2 on clip_l |
| Forge "Clip skip: N" | N-1 | max(N, 1)-2 (1, Forge's default, is the final layer) | max(N, 2)-2 |
| diffusers ``clip_skip`` k | k | k | k |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

AppliesTo = Literal["both", "clip_l", "clip_g"]
APPLIES_TO: tuple[AppliesTo, ...] = get_args(AppliesTo)


@dataclass(frozen=True)
class Family:
    """How a model family uses its text towers."""

    name: str  # architecture id: sd1, sd2, sdxl, sdxl_refiner, clip
    label: str  # for messages
    towers: tuple[str, ...]  # tower keys in conditioning channel order
    native_from_end: int  # 0: the final layer is native; 1: the penultimate is
    layer_norm: bool  # final LayerNorm applied to the selected layer
    pooled_tower: str
    project_pooled: bool  # pooled through text_projection (SD1.x conditioning keeps it raw)


FAMILIES = {
    "sd1": Family("sd1", "SD1.x", ("l",), 0, True, "l", False),
    "sd2": Family("sd2", "SD2.x", ("h",), 1, True, "h", True),
    "sdxl": Family("sdxl", "SDXL", ("l", "g"), 1, False, "g", True),
    "sdxl_refiner": Family("sdxl_refiner", "SDXL refiner", ("g",), 1, False, "g", True),
    # A full image-text CLIP used as a text encoder: its final, normalised layer, as SD1.x does.
    "clip": Family("clip", "CLIP", ("l",), 0, True, "l", True),
}
TOWER_LABELS = {"l": "CLIP-L", "g": "CLIP-G", "h": "OpenCLIP-H"}


@dataclass(frozen=True)
class LayerChoice:
    """The layer a tower uses (1..num_layers) and whether the final LayerNorm is applied to it."""

    layer: int
    layer_norm: bool
    num_layers: int

    @property
    def is_raw_final(self) -> bool:
        """The un-normalised final layer: some SDXL checkpoints ship it broken (white images)."""
        return self.layer == self.num_layers and not self.layer_norm

    def describe(self, tower: str) -> str:
        norm = "LayerNorm" if self.layer_norm else "no LayerNorm"
        return f"{TOWER_LABELS.get(tower, tower)} layer {self.layer}/{self.num_layers} ({norm})"


def clip_skip_range(family: Family, tower_layers: dict[str, int], applies_to: AppliesTo = "both") -> tuple[int, int]:
    """(lowest, highest) clip_skip allowed: from -1 where native is the penultimate, up to layer 1."""
    used = _skipped_towers(family, applies_to)
    low = -1 if family.native_from_end >= 1 else 0
    high = min(tower_layers[t] - family.native_from_end - 1 for t in used)
    return low, high


def _skipped_towers(family: Family, applies_to: AppliesTo) -> tuple[str, ...]:
    if applies_to not in APPLIES_TO:
        raise ValueError(f"clip_skip_applies_to={applies_to!r}; use one of {', '.join(APPLIES_TO)}")
    if applies_to == "both" or family.name != "sdxl":
        return family.towers
    return ("l",) if applies_to == "clip_l" else ("g",)


def resolve_layers(
    family: Family, tower_layers: dict[str, int], clip_skip: int, applies_to: AppliesTo = "both"
) -> dict[str, LayerChoice]:
    """The layer per tower for ``clip_skip`` (towers outside ``applies_to`` keep their native layer)."""
    low, high = clip_skip_range(family, tower_layers, applies_to)
    if not low <= clip_skip <= high:
        depth = ", ".join(f"{TOWER_LABELS[t]} {tower_layers[t]} layers" for t in family.towers)
        raise ValueError(
            f"clip_skip {clip_skip} is out of range for {family.label} ({depth}): use {low}..{high}. "
            f"{translation_hint(family)}"
        )
    skipped = _skipped_towers(family, applies_to)
    out = {}
    for t in family.towers:
        n = tower_layers[t]
        k = clip_skip if t in skipped else 0
        out[t] = LayerChoice(n - family.native_from_end - k, family.layer_norm, n)
    return out


def translation_hint(family: Family) -> str:
    """How other tools' settings map to clip_skip for this family (for errors and tooltips)."""
    if family.name in ("sdxl", "sdxl_refiner"):
        return (
            "0 = the native penultimate layer; ComfyUI CLIPSetLastLayer -N = clip_skip N-2 (-2 or no node = 0); "
            "diffusers clip_skip k = k; A1111's slider does nothing on SDXL (0)."
        )
    if family.name == "sd2":
        return "0 = the native penultimate layer; ComfyUI CLIPSetLastLayer -N = clip_skip N-2."
    return "0 = the final layer; A1111 'Clip skip: N' = ComfyUI CLIPSetLastLayer -N = clip_skip N-1."


def layer_warnings(choices: dict[str, LayerChoice]) -> list[str]:
    """Warnings about a layer selection (an un-normalised final layer on SDXL)."""
    return [
        f"{TOWER_LABELS.get(t, t)} uses its raw final layer (no LayerNorm): some SDXL checkpoints ship a broken "
        f"final {TOWER_LABELS.get(t, t)} layer that gives white or blank images; clip_skip 0 is the native "
        "penultimate layer"
        for t, c in choices.items()
        if c.is_raw_final
    ]


# ------------------------------------------------------------------------------ other tools' settings
@dataclass(frozen=True)
class Translation:
    """Another tool's clip-skip setting in our terms: ``clip_skip`` for ``applies_to``, and why (``note``)."""

    clip_skip: int
    applies_to: AppliesTo = "both"
    note: str = ""


def from_set_last_layer(family: Family, stop_at_clip_layer: int) -> int:
    """ComfyUI ``CLIPSetLastLayer(stop_at_clip_layer=-N)`` -> clip_skip (SD1.x N-1, SD2.x/SDXL N-2)."""
    if stop_at_clip_layer >= 0:
        raise ValueError(f"stop_at_clip_layer={stop_at_clip_layer}: CLIPSetLastLayer takes -1, -2, ...")
    return -stop_at_clip_layer - 1 - family.native_from_end


def to_set_last_layer(family: Family, clip_skip: int) -> int:
    """clip_skip -> the ``CLIPSetLastLayer`` value that selects the same layer (inverse of the above)."""
    return -(clip_skip + 1 + family.native_from_end)


def from_a1111(family: Family, clip_skip_n: int, sdxl_clip_l_skip: bool = False) -> Translation:
    """AUTOMATIC1111's "Clip skip: N" (1 = none) -> our setting.

    SD1.x: N-1. SD2.x: A1111 always uses the penultimate layer (its slider does nothing there): 0. SDXL:
    the slider does nothing (0) unless the option ``sdxl_clip_l_skip`` was on, then N-2 on CLIP-L only.
    """
    n = max(int(clip_skip_n), 1)
    if family.name in ("sd1", "clip"):
        return Translation(n - 1)
    if family.name == "sdxl" and sdxl_clip_l_skip:
        return Translation(n - 2, "clip_l", f"A1111 with sdxl_clip_l_skip: Clip skip {n} moves CLIP-L only")
    note = f"A1111 ignores Clip skip {n} on {family.label} (its slider does nothing there)" if n > 1 else ""
    return Translation(0, "both", note)


def from_forge(family: Family, clip_skip_n: int) -> Translation:
    """Forge's "Clip skip: N" -> our setting: SD1.x N-1; SDXL max(N, 2)-2 on both towers; SD2.x N-2.

    Forge (``backend/diffusion_engine/*.py``, ``classic_engine.py``) takes ``hidden_states[-max(N, m)]``
    with m = 2 and no LayerNorm on SDXL, m = 1 with LayerNorm on SD1.x and SD2.x: so on SD2.x its default
    Clip skip 1 is the final layer (our -1), not the penultimate layer SD2 was trained with.
    """
    n = max(int(clip_skip_n), 1)
    if family.name in ("sdxl", "sdxl_refiner"):
        note = f"Forge uses the penultimate layer for Clip skip {n} on SDXL" if n < 2 else ""
        return Translation(max(n, 2) - 2, "both", note)
    if family.name == "sd2":
        note = "Forge uses SD2's final layer for Clip skip 1 (its default): clip_skip -1" if n == 1 else ""
        return Translation(n - 2, "both", note)
    return from_a1111(family, n)


def from_diffusers(family: Family, clip_skip: int | None) -> int:
    """diffusers ``clip_skip`` (None = the pipeline default) -> clip_skip: the same number."""
    return int(clip_skip or 0)


def layer_table(family: Family, tower_layers: dict[str, int]) -> dict:
    """Everything the web page shows about clip_skip for one loaded model, resolved here so the page keeps
    no copy of the rules: per ``applies_to``, the allowed range and, for each allowed clip_skip, each
    tower's layer (with its description) and the warnings. JSON-ready (clip_skip values as string keys)."""
    out = {"family": family.name, "label": family.label, "hint": translation_hint(family),
           "towers": {t: TOWER_LABELS.get(t, t) for t in family.towers},
           "order": list(family.towers),  # channel order (JSON objects need not keep key order)
           "applies_to": {}}
    for applies_to in APPLIES_TO:
        low, high = clip_skip_range(family, tower_layers, applies_to)
        choices = {}
        for k in range(low, high + 1):
            layers = resolve_layers(family, tower_layers, k, applies_to)
            choices[str(k)] = {
                "layers": {t: {"layer": c.layer, "layer_norm": c.layer_norm, "num_layers": c.num_layers,
                               "describe": c.describe(t)} for t, c in layers.items()},
                "warnings": layer_warnings(layers),
            }
        out["applies_to"][applies_to] = {"range": [low, high], "choices": choices}
    return out
