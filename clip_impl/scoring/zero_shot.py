"""Zero-shot classification with a CLIP: label each image with the best of a list of labels.

The recipe of the CLIP paper (Radford et al. 2021, sec. 3.1.4) and open_clip's
``build_zero_shot_classifier``: each label is put into one or more templates ("a photo of {}."); the text
embeddings of one label are L2-normalised, averaged over the templates and normalised again (the label's
"classifier" vector). An image's logits are ``factor * cos(image, label)`` with ``factor`` the model's own
``exp(logit_scale)`` where the file holds one (full HF/OpenCLIP CLIPs) and 100 otherwise (a text encoder +
clip_vision pair; ``similarity.logit_factor``); probabilities are the softmax over the labels. With one
template this is transformers' ``CLIPModel(...).logits_per_image.softmax(-1)``.

Labels and templates are used as written (no weighting syntax: brackets are words), cut to 75 tokens like
every scored prompt. Text embeddings are cached per (text tower, tokens) in ``similarity.TEXT_CACHE``, so
each (model, label, template) is encoded once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..cache import ByteLRUCache
from ..model import ClipModel
from .similarity import TEXT_CACHE, image_embeddings, logit_factor, prepare_prompt, text_embeddings

DEFAULT_TEMPLATE = "a photo of {}."
TEMPLATE_SEPARATOR = "|"
SLOT = "{}"
MIN_LABELS = 2


def parse_labels(text: str, separator: str = "\n") -> list[str]:
    """Labels from ``text``: one per line (or per ``separator``), surrounding spaces and blank entries ignored.

    Raises ValueError for fewer than 2 labels or a label given twice.
    """
    labels = [part.strip() for part in str(text).split(separator)]
    labels = [label for label in labels if label]
    where = "one a line" if separator == "\n" else f"separated by {separator!r}"
    if len(labels) < MIN_LABELS:
        found = f"only {labels[0]!r}" if labels else "none"
        raise ValueError(
            f"labels: zero-shot classification needs at least {MIN_LABELS} labels ({where}), found {found}; "
            "add the other categories an image could be (e.g. 'portrait', 'landscape', 'anime')"
        )
    seen = set()
    for label in labels:
        if label.lower() in seen:
            raise ValueError(f"labels: {label!r} is given twice; each label once (they would split its probability)")
        seen.add(label.lower())
    return labels


def parse_templates(text: str) -> list[str]:
    """Templates from ``text``: several are separated by ``|`` (``"a photo of {}. | a drawing of {}."``).

    Each needs ``{}`` where the label goes. Raises ValueError for no template or one without ``{}``.
    """
    templates = [part.strip() for part in str(text).split(TEMPLATE_SEPARATOR)]
    templates = [t for t in templates if t]
    if not templates:
        raise ValueError(f"template is empty; use e.g. {DEFAULT_TEMPLATE!r} ({SLOT} is where the label goes)")
    for template in templates:
        if SLOT not in template:
            raise ValueError(
                f"template {template!r} has no {SLOT} where the label goes; write e.g. 'a photo of {SLOT}.' "
                f"(several templates are separated by ' | ')"
            )
    return templates


def fill(template: str, label: str) -> str:
    """The text for one (template, label): every ``{}`` replaced by the label."""
    return template.replace(SLOT, label)


def label_embeddings(
    model: ClipModel, labels: list[str], templates: list[str], cache: ByteLRUCache | None = TEXT_CACHE
) -> tuple[torch.Tensor, list[str]]:
    """(classifier (L, P) float32, notes): per label, the mean of its normalised template embeddings,
    normalised again. Notes name labels cut to 75 tokens."""
    prompts = [prepare_prompt(fill(t, label), "none") for label in labels for t in templates]
    notes = sorted({f"{p.cleaned[:60]!r}: {n}" for p in prompts for n in p.notes})
    emb = text_embeddings(model, prompts, cache)  # (L*T, P), label-major
    per_label = emb.view(len(labels), len(templates), -1).mean(dim=1)
    return F.normalize(per_label, dim=-1), notes


@dataclass
class ZeroShotResult:
    """Probabilities (B, L) of every label for every image, with what produced them."""

    labels: list[str]
    templates: list[str]
    probabilities: torch.Tensor  # (B, L) float32, rows sum to 1
    cosines: torch.Tensor  # (B, L) float32
    factor: float
    factor_source: str
    model: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def label_indexes(self) -> list[int]:
        """Per image, the index of its most probable label (the first on ties)."""
        return self.probabilities.argmax(dim=-1).tolist()

    def top(self, image: int, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most probable (label, probability) pairs of one image, best first."""
        probs = self.probabilities[image]
        k = min(k, len(self.labels))
        order = sorted(range(len(self.labels)), key=lambda j: (-float(probs[j]), j))[:k]
        return [(self.labels[j], float(probs[j])) for j in order]

    @property
    def report(self) -> str:
        """A table of every image's top 3 labels, with the logit factor used and notes."""
        n, t = self.probabilities.shape[0], len(self.templates)
        shown = " | ".join(self.templates) if t <= 3 else " | ".join(self.templates[:3]) + f" | ... ({t} in all)"
        lines = [
            f"CLIP zero-shot{' (' + self.model + ')' if self.model else ''}: {n} image{'s' if n != 1 else ''}, "
            f"{len(self.labels)} labels, {t} template{'s' if t != 1 else ''} ({shown})",
            f"logits = cosine x {self.factor_source}; probabilities = softmax over the labels",
        ]
        lines += [
            f"  #{i}: " + ", ".join(f"{label} {p:.4f}" for label, p in self.top(i, 3)) for i in range(n)
        ]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def probabilities(
    image_embeds: torch.Tensor, classifier: torch.Tensor, factor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, cosines), both (B, L): softmax over labels of ``factor * cos``.

    ``image_embeds`` (B, P) and ``classifier`` (L, P) are L2-normalised."""
    cos = image_embeds.float() @ classifier.to(image_embeds.device).float().T
    return (factor * cos).softmax(dim=-1), cos


def classify_images(
    model: ClipModel,
    images: torch.Tensor,
    labels: list[str],
    templates: list[str],
    batch_size: int = 8,
    cache: ByteLRUCache | None = TEXT_CACHE,
) -> ZeroShotResult:
    """Classify every image of an IMAGE batch [B, H, W, C] (0..1) among ``labels`` (see the module doc)."""
    classifier, notes = label_embeddings(model, labels, templates, cache)
    return classify_embeddings(model, image_embeddings(model, images, batch_size), labels, templates, classifier, notes)


def classify_embeddings(
    model: ClipModel, image_embeds: torch.Tensor, labels: list[str], templates: list[str],
    classifier: torch.Tensor | None = None, notes: list[str] | None = None,
) -> ZeroShotResult:
    """The same from image embeddings (B, P) already computed (``classifier``: from ``label_embeddings``)."""
    if classifier is None:
        classifier, notes = label_embeddings(model, labels, templates)
    factor, source = logit_factor(model)
    probs, cos = probabilities(image_embeds, classifier, factor)
    return ZeroShotResult(
        list(labels), list(templates), probs.cpu(), cos.cpu(), factor, source, model.vision.config.name,
        list(notes or []),
    )
