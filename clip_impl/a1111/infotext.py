"""A1111/Forge infotexts ("parameters"): the prompts and the settings that decide the conditioning.

The format, as A1111 1.10 writes it (``processing.create_infotext``) and reads it back
(``infotext_utils.parse_generation_parameters``):

    <prompt, possibly several lines>
    Negative prompt: <negative prompt, possibly several lines>
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, ..., Clip skip: 2, Version: v1.10.1

The last line holds ``key: value`` fields separated by ", " (it counts as the field line only with three
fields or more); a value with a comma, colon or line break is written as a JSON string. Prompt lines are
stripped. ``Clip skip`` is written only when above 1; ``Emphasis`` only when not "Original"; Forge's
``Version`` starts with "f" (``f2.0.1v1.10.1-...``), A1111's with "v".

:func:`parse_infotext` never raises on a string: what it cannot read is listed in ``unreadable``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal, get_args

from ..clip_skip import FAMILIES, AppliesTo, from_a1111, from_forge
from ..text import Chunking, Weighting
from .extra_networks import find_tags

_FIELD = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_FORGE_VERSION = re.compile(r"^f\d")
EMPHASIS_WEIGHTING: dict[str, Weighting] = {"original": "a1111", "no norm": "a1111_no_norm", "none": "none"}
InfotextFamily = Literal["sd1", "sd2", "sdxl"]
INFOTEXT_FAMILIES: tuple[InfotextFamily, ...] = get_args(InfotextFamily)
DEFAULTS = {"steps": 20, "cfg": 7.0, "seed": 0, "width": 512, "height": 512}  # A1111's UI defaults (seed: -1 = random)


@dataclass
class Infotext:
    """What an infotext says: the prompts, every field (unquoted), and the fields that could not be read."""

    positive: str = ""
    negative: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def parse_infotext(text) -> Infotext:
    """Split an infotext into prompts and fields (A1111's own reading rules). Never raises."""
    if not isinstance(text, str):
        return Infotext(unreadable=[f"parameters: expected text, got {type(text).__name__}"])
    *lines, last = text.strip().split("\n")
    if len(_FIELD.findall(last)) < 3:
        lines.append(last)
        last = ""
    positive, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else positive).append(line)
    out = Infotext("\n".join(positive), "\n".join(negative))
    for key, value in _FIELD.findall(last):
        value = _unquote(value.strip()) if value.strip() else value
        m = _SIZE.match(value)
        if m:
            out.fields[f"{key}-1"], out.fields[f"{key}-2"] = m.group(1), m.group(2)
        out.fields[key] = value
    if "Hypernet" in out.fields:  # A1111 pastes the hypernetwork back into the prompt as a tag
        out.positive += f"<hypernet:{out.fields['Hypernet']}:{out.fields.get('Hypernet strength', '1.0')}>"
    return out


@dataclass
class A1111Settings:
    """An infotext translated into our encoders' settings, with a line per decision in ``report``."""

    positive: str
    negative: str
    clip_skip: int
    clip_skip_applies_to: AppliesTo
    weighting: Weighting
    chunking: Chunking
    steps: int
    cfg: float
    seed: int
    width: int
    height: int
    lora_tags: list[str]
    report: list[str]


def _number(info: Infotext, key: str, kind, default, report: list[str]):
    raw = info.fields.get(key)
    if raw is None:
        report.append(f"{key}: not in the infotext; using {default}")
        return default
    try:
        value = kind(raw.strip())
        if kind is float and value != value:
            raise ValueError(raw)
        return value
    except (ValueError, OverflowError):
        info.unreadable.append(f"{key}: {raw!r}")
        report.append(f"{key}: {raw!r} is not a number; using {default}")
        return default


def translate(info: Infotext, family: InfotextFamily) -> A1111Settings:
    """Our settings for an infotext made with a model of ``family`` (sd1, sd2, sdxl)."""
    if family not in INFOTEXT_FAMILIES:
        raise ValueError(f"family={family!r}; use one of {', '.join(INFOTEXT_FAMILIES)}")
    fam = FAMILIES[family]
    report: list[str] = []
    version = info.fields.get("Version", "")
    forge = bool(_FORGE_VERSION.match(version))
    tool = "Forge" if forge else "A1111"
    report.append(f"made with {tool}" + (f" (Version: {version})" if version else " (no Version field: read as A1111)"))

    n = _number(info, "Clip skip", int, 1, []) if "Clip skip" in info.fields else 1
    translation = from_forge(fam, n) if forge else from_a1111(fam, n)
    shown = f"Clip skip: {n}" if "Clip skip" in info.fields else "no Clip skip field (= 1)"
    report.append(f"{shown} -> clip_skip {translation.clip_skip} ({translation.applies_to}) on {fam.label}")
    if translation.note:
        report.append(f"note: {translation.note}")

    emphasis = info.fields.get("Emphasis", "Original")
    weighting = EMPHASIS_WEIGHTING.get(emphasis.strip().lower())
    if weighting is None:
        info.unreadable.append(f"Emphasis: {emphasis!r}")
        report.append(f"Emphasis: {emphasis!r} is not Original, No norm or None; using a1111")
        weighting = "a1111"
    else:
        report.append(f"Emphasis: {emphasis} -> weighting {weighting}")
    report.append("chunking a1111 (A1111's comma backtrack" + (", Forge: always 20)" if forge else ")"))

    steps = _number(info, "Steps", int, DEFAULTS["steps"], report)
    cfg = _number(info, "CFG scale", float, DEFAULTS["cfg"], report)
    seed = _number(info, "Seed", int, DEFAULTS["seed"], report)
    width = _number(info, "Size-1", int, DEFAULTS["width"], report) if "Size" in info.fields else DEFAULTS["width"]
    height = _number(info, "Size-2", int, DEFAULTS["height"], report) if "Size" in info.fields else DEFAULTS["height"]
    if "Size" in info.fields and "Size-1" not in info.fields:
        info.unreadable.append(f"Size: {info.fields['Size']!r}")
        report.append(f"Size: {info.fields['Size']!r} is not WIDTHxHEIGHT; using {width}x{height}")
    elif "Size" not in info.fields:
        report.append(f"Size: not in the infotext; using {width}x{height}")
    report.append(f"steps {steps}, cfg {cfg:g}, seed {seed}, size {width}x{height}"
                  + (f", sampler {info.fields['Sampler']}" if "Sampler" in info.fields else "")
                  + (f", schedule type {info.fields['Schedule type']}" if "Schedule type" in info.fields else ""))

    tags = find_tags(info.positive)
    lora_tags = [f"{t.name}:{t.weight or '1'}" for t in tags if t.kind in ("lora", "lyco")]
    if tags:
        report.append(f"{len(tags)} extra-network tag(s) kept in positive (our encoders remove them under a1111 "
                      f"weighting): {', '.join(f'{t.kind} {t.describe()}' for t in tags)}; load the LoRAs with a LoRA loader")
    if find_tags(info.negative):
        report.append("note: the negative prompt holds <...> tags: A1111 encodes those as words (it removes tags "
                      "from the positive prompt only); our encoders remove them under a1111 weighting")
    for key in ("Hires prompt", "Hires negative prompt", "Hires upscale", "Hires steps", "Denoising strength"):
        if key in info.fields:
            report.append(f"{key}: {info.fields[key]} (a hires pass: not reproduced by these outputs)")
    if not info.positive and not info.negative and not info.fields:
        report.append("nothing readable in the infotext")
    report += [f"unreadable: {u}" for u in info.unreadable]
    return A1111Settings(
        info.positive, info.negative, translation.clip_skip, translation.applies_to, weighting, "a1111",
        steps, cfg, seed, width, height, lora_tags, report,
    )
