"""The loaded model bundle: a family, its text towers, and optionally a vision tower (for scoring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

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
    # A full image-text CLIP's ``logit_scale`` (its learned log temperature): a callable that reads it from
    # the file on first use (None when the files hold none: a text encoder + clip_vision pair).
    logit_scale_source: Callable[[], float] | None = field(default=None, repr=False)
    _logit_scale: float | None = field(default=None, init=False, repr=False)

    @property
    def logit_scale(self) -> float | None:
        """The file's ``logit_scale`` (e.g. 4.6052 = log 100), read once; None when there is none."""
        if self._logit_scale is None and self.logit_scale_source is not None:
            self._logit_scale = self.logit_scale_source()
        return self._logit_scale

    @logit_scale.setter
    def logit_scale(self, value: float | None) -> None:
        self._logit_scale = value

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
