"""Zero-shot classification with a CLIP: label each image with the best of a list of labels.

The recipe of the CLIP paper (Radford et al. 2021, sec. 3.1.4) and open_clip's
``build_zero_shot_classifier``: each label is put into one or more templates ("a photo of {}."); the text
embeddings of one label are L2-normalised, averaged over the templates and normalised again (the label's
"classifier" vector). An image's logits are ``factor * cos(image, label)`` with ``factor`` the model's own
``exp(logit_scale)`` where the file holds one (full HF/OpenCLIP CLIPs) and 100 otherwise (a text encoder +
clip_vision pair; ``similarity.logit_factor``); probabilities are the softmax over the labels. With one
template this is transformers' ``CLIPModel(...).logits_per_image.softmax(-1)``.

Labels and templates are used as written (no weighting syntax: brackets are words; runs of spaces become
one), cut to 75 tokens like every scored prompt. Two labels that CLIP reads alike (they differ only in case
or spacing) are refused as a label given twice. Text embeddings are cached per (text tower, tokens) in
``similarity.TEXT_CACHE``, so each (model, label, template) is encoded once.

Limits, checked before any work: at most MAX_LABELS labels of at most MAX_LABEL_CHARS characters each, a
labels text of at most MAX_LABELS_TEXT characters, at most MAX_TEMPLATES templates (each at most
MAX_LABEL_CHARS characters with at most MAX_SLOTS ``{}``) and MAX_TEXTS label x template texts of
MAX_TEXT_CHARS characters in all.
Messages quote at most SHOWN_CHARS characters of a label.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..cache import ByteLRUCache
from ..model import ClipModel
from .similarity import TEXT_CACHE, image_embeddings, logit_factor, prepare_prompt, token_embeddings

DEFAULT_TEMPLATE = "a photo of {}."
TEMPLATE_SEPARATOR = "|"
SLOT = "{}"
MIN_LABELS = 2
MAX_LABELS = 200_000
MAX_LABEL_CHARS = 1_000  # CLIP reads 75 tokens: a longer label is not a label
MAX_LABELS_TEXT = 16 * 1024 * 1024  # characters of the whole labels text (a --labels-file, the node's box)
MAX_TEMPLATES = 100  # CLIP's own ImageNet prompt set has 80
MAX_SLOTS = 8  # "{}" in one template
MAX_TEXTS = 200_000  # labels x templates: the texts encoded
MAX_TEXT_CHARS = 32 * 1024 * 1024  # characters of those texts in all (each is tokenized before the cut to 75 tokens)
MAX_NOTES = 10  # notes about single labels; the rest are counted
SHOWN_CHARS = 60  # of a label quoted in a message
LABEL_BATCH = 128  # texts per forward pass: short texts, so bigger batches than prompts (fewer, fuller ops)
_SPACES = re.compile(r"\s+")


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` for a message: at most ``limit`` characters, the cut said with its length."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def label_key(label: str) -> str:
    """What CLIP's tokenizer reads of a label (NFC, runs of whitespace as one space, lowercase): two
    labels with one key are the same label."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", label)).strip().lower()


def parse_labels(text: str, separator: str = "\n") -> list[str]:
    """Labels from ``text``: one per line (or per ``separator``), surrounding spaces and blank entries ignored,
    runs of whitespace inside a label as one space.

    Raises ValueError for fewer than 2 labels, a label given twice (compared as CLIP reads them: case and
    spacing do not count), and past the limits of the module docstring (checked as the text is read).
    """
    text = str(text)
    where = "one a line" if separator == "\n" else f"separated by {separator!r}"
    if len(text) > MAX_LABELS_TEXT:
        raise ValueError(
            f"labels: the text has {len(text):,} characters; at most {MAX_LABELS_TEXT:,} are read (MAX_LABELS_TEXT): "
            f"give at most {MAX_LABELS:,} labels of at most {MAX_LABEL_CHARS:,} characters each"
        )
    labels: list[str] = []
    seen: dict[str, str] = {}
    for raw in _entries(text, separator):
        if len(labels) == MAX_LABELS:
            raise ValueError(
                f"labels: more than {MAX_LABELS:,} labels ({where}); at most {MAX_LABELS:,} are classified among "
                "(MAX_LABELS): split them into several runs"
            )
        label = _SPACES.sub(" ", raw).strip()
        if len(label) > MAX_LABEL_CHARS:
            raise ValueError(
                f"labels: {shorten(label)!r} is longer than {MAX_LABEL_CHARS:,} characters (MAX_LABEL_CHARS; CLIP "
                f"reads 75 tokens of it): give a short name for the category ({where})"
            )
        key = label_key(label)
        if key in seen:
            also = f" (as {shorten(seen[key])!r} too)" if seen[key] != label else ""
            raise ValueError(
                f"labels: {shorten(label)!r} is given twice{also}; each label once (they would split its "
                "probability; labels that differ only in case or spacing are the same text to CLIP)"
            )
        seen[key] = label
        labels.append(label)
    if len(labels) < MIN_LABELS:
        found = f"only {shorten(labels[0])!r}" if labels else "none"
        raise ValueError(
            f"labels: zero-shot classification needs at least {MIN_LABELS} labels ({where}), found {found}; "
            "add the other categories an image could be (e.g. 'portrait', 'landscape', 'anime')"
        )
    return labels


def _entries(text: str, separator: str):
    """The non-blank entries of ``text`` between separators, from their first non-space character, one at
    a time (linear: no list of every entry, blank ones included, is made first)."""
    if len(separator) != 1:
        yield from (part for part in text.split(separator) if part.strip())
        return
    sep = re.escape(separator)
    # One pass: a match starts at a character that is neither space nor separator and runs to the next
    # separator, so nothing is tried twice (no backtracking on long runs of spaces).
    for match in re.finditer(rf"[^\s{sep}][^{sep}]*", text):
        yield match.group()


def check_sizes(labels: list[str], templates: list[str]) -> None:
    """ValueError past the limits of the module docstring on label and template counts (before any work)."""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"labels: {len(labels):,} labels; at most {MAX_LABELS:,} (MAX_LABELS): split them into several runs")
    long = next((label for label in labels if len(label) > MAX_LABEL_CHARS), None)
    if long is not None:
        raise ValueError(f"labels: {shorten(long)!r} is longer than {MAX_LABEL_CHARS:,} characters (MAX_LABEL_CHARS)")
    if len(labels) * len(templates) > MAX_TEXTS:
        raise ValueError(
            f"{len(labels):,} labels x {len(templates)} templates = {len(labels) * len(templates):,} texts to encode; "
            f"at most {MAX_TEXTS:,} (MAX_TEXTS): use fewer templates or fewer labels"
        )
    label_chars = sum(map(len, labels))
    chars = len(labels) * sum(map(len, templates)) + sum(t.count(SLOT) for t in templates) * label_chars
    if chars > MAX_TEXT_CHARS:
        raise ValueError(
            f"the labels put into the templates make {chars:,} characters of text to encode; at most "
            f"{MAX_TEXT_CHARS:,} (MAX_TEXT_CHARS): use shorter labels, fewer templates or fewer {SLOT} in them"
        )


def parse_templates(text: str) -> list[str]:
    """Templates from ``text``: several are separated by ``|`` (``"a photo of {}. | a drawing of {}."``).

    Each needs ``{}`` where the label goes. Raises ValueError for no template, one without ``{}``, and past
    MAX_TEMPLATES templates, MAX_LABEL_CHARS characters or MAX_SLOTS ``{}`` in one.
    """
    text = str(text)
    if text.count(TEMPLATE_SEPARATOR) >= MAX_TEMPLATES:  # counted before anything is split
        raise ValueError(f"template: more than {MAX_TEMPLATES} templates (MAX_TEMPLATES); ensemble at most {MAX_TEMPLATES}")
    templates = [part.strip() for part in text.split(TEMPLATE_SEPARATOR)]
    templates = [t for t in templates if t]
    if not templates:
        raise ValueError(f"template is empty; use e.g. {DEFAULT_TEMPLATE!r} ({SLOT} is where the label goes)")
    for template in templates:
        if SLOT not in template:
            raise ValueError(
                f"template {shorten(template)!r} has no {SLOT} where the label goes; write e.g. 'a photo of {SLOT}.' "
                f"(several templates are separated by ' | ')"
            )
        if len(template) > MAX_LABEL_CHARS or template.count(SLOT) > MAX_SLOTS:
            raise ValueError(
                f"template {shorten(template)!r}: at most {MAX_LABEL_CHARS:,} characters and {MAX_SLOTS} {SLOT} "
                "(MAX_LABEL_CHARS, MAX_SLOTS); CLIP reads 75 tokens of the text"
            )
    return templates


def fill(template: str, label: str) -> str:
    """The text for one (template, label): every ``{}`` replaced by the label."""
    return template.replace(SLOT, label)


def label_embeddings(
    model: ClipModel, labels: list[str], templates: list[str], cache: ByteLRUCache | None = TEXT_CACHE
) -> tuple[torch.Tensor, list[str]]:
    """(classifier (L, P) float32, notes): per label, the mean of its normalised template embeddings,
    normalised again. Notes name labels cut to 75 tokens (the first MAX_NOTES, then a count). ValueError
    past the limits of the module docstring, before anything is encoded."""
    check_sizes(labels, templates)
    ids, notes, cut = [], [], 0
    for label in labels:
        for template in templates:
            prompt = prepare_prompt(fill(template, label), "none")
            ids.append(prompt.ids)  # only the ids are kept: not one object per text
            cut += bool(prompt.notes)
            if prompt.notes and len(notes) < MAX_NOTES:
                notes += [f"{shorten(prompt.cleaned)!r}: {note}" for note in prompt.notes]
    notes = sorted(dict.fromkeys(notes))
    if cut > len(notes):
        notes.append(f"{cut - len(notes):,} more label texts were cut to 75 tokens")
    emb = token_embeddings(model, ids, cache, LABEL_BATCH)  # (L*T, P), label-major
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
        """The ``k`` most probable (label, probability) pairs of one image, best first (the first label on
        ties). Linear in the labels: the k-th value found by topk, then only the labels at or above it sorted."""
        probs = self.probabilities[image]
        k = min(k, len(self.labels))
        if k <= 0:
            return []
        ranked = torch.nan_to_num(probs, nan=-1.0)  # a NaN (a broken model) ranks last, not nowhere
        kth = torch.topk(ranked, k).values[-1]
        candidates = torch.nonzero(ranked >= kth).flatten()  # ascending label order
        order = candidates[torch.sort(ranked[candidates], descending=True, stable=True).indices][:k].tolist()
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
            f"  #{i}: " + ", ".join(f"{shorten(label)} {p:.4f}" for label, p in self.top(i, 3)) for i in range(n)
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
