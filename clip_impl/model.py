"""The loaded model bundle: a family, its text towers, and optionally a vision tower (for scoring)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .clip_skip import TOWER_LABELS, Family


@dataclass
class ClipModel:
    """What the loader returns and the encoders take (the ``CLIP_SUITE`` type in ComfyUI)."""

    family: Family
    towers: dict  # tower key ("l", "g", "h") -> TextTower
    vision: object | None = None  # VisionTower when the model can score images
    sources: tuple[str, ...] = ()
    precision: str = "auto"
    extra: dict = field(default_factory=dict)
    # A full image-text CLIP's learned log temperature (``logit_scale`` in its file), None when the files
    # hold none (a text encoder + clip_vision pair). See ``similarity.logit_factor``.
    logit_scale: float | None = None

    def tower_layers(self) -> dict[str, int]:
        """Number of layers per tower key."""
        return {k: t.config.layers for k, t in self.towers.items()}

    def describe(self) -> str:
        """One line: family, towers with their depth, precision."""
        parts = [f"{TOWER_LABELS.get(k, k)} {t.config.layers}x{t.config.width}" for k, t in self.towers.items()]
        if self.vision is not None:
            parts.append(f"vision {self.vision.config.name}")
        return f"{self.family.label}: {', '.join(parts)}; precision {self.precision}"

    def modules(self) -> list:
        """Every torch module of the bundle (towers, then the vision tower)."""
        out = list(self.towers.values())
        if self.vision is not None:
            out.append(self.vision)
        return out
