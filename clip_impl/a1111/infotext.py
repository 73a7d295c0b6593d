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

:func:`parse_infotext` never raises on a string: what it cannot read is listed in ``unreadable``. It is
linear in the text's length whatever its shape (A1111's field regex, read with ``findall``, is quadratic on
a long last line: 64 K characters took 20 s). :func:`translate` passes on only values that ComfyUI's own
widgets accept (:data:`RANGES`: KSampler's steps, cfg and seed, EmptyLatentImage's size, the family's
clip-skip range); any other value is replaced by the default, and the report says which and why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal, get_args

from ..clip_skip import FAMILIES, AppliesTo, clip_skip_range, from_a1111, from_forge
from ..text import Chunking, Weighting
from ..towers.text import CLIP_L, OPENCLIP_BIGG, OPENCLIP_H
from .extra_networks import find_tags
from .limits import MAX_STEPS

# A1111's field regex is \s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$), read with findall. _fields
# reads the same fields in one pass: a key starts at the first word character of a run of [\w \-/] that
# ends in ':' (so a failed run is never read again from inside), a quoted value ends at its closing quote.
_KEY = re.compile(r"(?<![\w \-/])[ \-/]*(\w[\w \-/]+):")
_QUOTED = re.compile(r'"(?:\\.|[^\\"])+"')
_SPACES = re.compile(r"\s*")
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_DIGITS = re.compile(r"[-+]?\d+")
_FORGE_VERSION = re.compile(r"^f\d")
EMPHASIS_WEIGHTING: dict[str, Weighting] = {"original": "a1111", "no norm": "a1111_no_norm", "none": "none"}
InfotextFamily = Literal["sd1", "sd2", "sdxl"]
INFOTEXT_FAMILIES: tuple[InfotextFamily, ...] = get_args(InfotextFamily)
DEFAULTS = {"steps": 20, "cfg": 7.0, "seed": 0, "width": 512, "height": 512}  # A1111's UI defaults (seed: -1 = random)
MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION
RANGES = {  # (lowest, highest, whose range): what ComfyUI's widgets accept for each output
    "steps": (1, MAX_STEPS, "ComfyUI's KSampler"),
    "cfg": (0.0, 100.0, "ComfyUI's KSampler"),
    "seed": (0, 0xFFFFFFFFFFFFFFFF, "ComfyUI's KSampler"),
    "size": (16, MAX_RESOLUTION, "ComfyUI's EmptyLatentImage"),
}
LISTED_TAGS = 20  # extra-network tags named one by one in the report
SIZE_STEP = 8  # EmptyLatentImage's width/height step (the latent is 1/8 of the image)
FAMILY_LAYERS = {"sd1": {"l": CLIP_L.layers}, "sd2": {"h": OPENCLIP_H.layers},
                 "sdxl": {"l": CLIP_L.layers, "g": OPENCLIP_BIGG.layers}}  # the families' standard towers


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


def _fields(line: str) -> list[tuple[str, str]]:
    """``re.findall`` of A1111's field regex on ``line``: [(key, value as written)], in linear time."""
    out, pos, n = [], 0, len(line)
    while pos < n:
        key = _KEY.search(line, pos)  # pos is 0 or follows a ',': no run of key characters starts before it
        if key is None:
            break
        start = _SPACES.match(line, key.end()).end()
        quoted = _QUOTED.match(line, start) if line.startswith('"', start) else None
        end = quoted.end() if quoted else -1
        if quoted and (end == n or line[end] == "," or line[end:] == "\n"):
            value, pos = quoted.group(0), end + (line[end:end + 1] == ",")
        else:
            comma = line.find(",", start)
            value, pos = (line[start:], n) if comma < 0 else (line[start:comma], comma + 1)
        out.append((key.group(1), value))
    return out


def _shown(value: str, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters (a field can be megabytes long)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


def _cut(value: str, limit: int = 200) -> str:
    """``value`` as it reads in the report, cut to ``limit`` characters."""
    return value if len(value) <= limit else f"{value[:limit]}... ({len(value):,} characters)"


def parse_infotext(text) -> Infotext:
    """Split an infotext into prompts and fields (A1111's own reading rules). Never raises."""
    if not isinstance(text, str):
        return Infotext(unreadable=[f"parameters: expected text, got {type(text).__name__}"])
    *lines, last = text.strip().split("\n")
    found = _fields(last)
    if len(found) < 3:
        lines.append(last)
        last, found = "", []
    positive, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else positive).append(line)
    out = Infotext("\n".join(positive), "\n".join(negative))
    for key, value in found:
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


def _number(info: Infotext, key: str, kind, default, report: list[str], limits=None, label: str | None = None):
    """The field ``key`` read with ``kind`` (int, float); ``default`` when it is missing, unreadable or
    outside ``limits`` (lowest, highest, whose range), with a report line saying which and why."""
    raw = info.fields.get(key)
    label = label or key
    if raw is None:
        report.append(f"{label}: not in the infotext; using {default}")
        return default
    try:
        value = kind(raw.strip())
        if kind is float and value != value:
            raise ValueError(raw)
    except (ValueError, OverflowError):
        if limits is None or not _DIGITS.fullmatch(raw.strip()):
            info.unreadable.append(f"{label}: {_shown(raw)}")
            report.append(f"{label}: {_shown(raw)} is not a number; using {default}")
            return default
        value = None  # thousands of digits: Python's int() refuses them, no widget takes them
    if limits is not None and (value is None or not limits[0] <= value <= limits[1]):
        shown = raw.strip() if len(raw.strip()) <= 30 else _shown(raw.strip(), 20)
        report.append(f"{label}: {shown} is out of range ({limits[0]:g}..{limits[1]:g}, {limits[2]}); "
                      f"replaced by the default {default}")
        return default
    return value


def _size(info: Infotext, report: list[str]) -> tuple[int, int]:
    """Width and height from ``Size``: defaults when missing, unreadable or out of EmptyLatentImage's range;
    rounded down to its step of 8 otherwise (A1111 made the latent width // 8 too)."""
    default = (DEFAULTS["width"], DEFAULTS["height"])
    if "Size" not in info.fields:
        report.append(f"Size: not in the infotext; using {default[0]}x{default[1]}")
        return default
    m = _SIZE.match(info.fields["Size"])
    if m is None:
        info.unreadable.append(f"Size: {_shown(info.fields['Size'])}")
        report.append(f"Size: {_shown(info.fields['Size'])} is not WIDTHxHEIGHT; using {default[0]}x{default[1]}")
        return default
    low, high, whose = RANGES["size"]
    digits = m.groups()
    width, height = (int(d) for d in digits) if max(map(len, digits)) <= 9 else (0, 0)  # 26 digits: out of range
    if not (low <= width <= high and low <= height <= high):
        report.append(f"Size: {_shown(info.fields['Size'], 30)} is out of range ({low}..{high} each, {whose}); "
                      f"replaced by the default {default[0]}x{default[1]}")
        return default
    if width % SIZE_STEP or height % SIZE_STEP:
        rounded = (width - width % SIZE_STEP, height - height % SIZE_STEP)
        report.append(f"Size: {width}x{height} is not a multiple of {SIZE_STEP} ({whose}'s step); using "
                      f"{rounded[0]}x{rounded[1]}, the size A1111's latent made")
        return rounded
    return width, height


def _clip_skip(info: Infotext, family: InfotextFamily, forge: bool, report: list[str]) -> int:
    """A1111's ``Clip skip`` N: 1 when missing or unreadable (listed in ``unreadable``); 1 with a report line
    when beyond the family's towers (N above the deepest tower's layer count, or a translation outside
    ``clip_skip_range``)."""
    if "Clip skip" not in info.fields:
        return 1
    unreadable = len(info.unreadable)
    n = _number(info, "Clip skip", int, 1, [])
    if len(info.unreadable) > unreadable:
        return 1
    deepest = max(FAMILY_LAYERS[family].values())
    translated = (from_forge if forge else from_a1111)(FAMILIES[family], n) if 1 <= n <= deepest else None
    low, high = clip_skip_range(FAMILIES[family], FAMILY_LAYERS[family])
    if translated is None or not low <= translated.clip_skip <= high:
        shown = str(n) if len(str(n)) <= 30 else f"{str(n)[:12]}... ({len(str(n))} digits)"
        report.append(f"Clip skip: {shown} is out of range for {FAMILIES[family].label} (1..{deepest} layers of its "
                      "deepest tower, and within its clip_skip range); replaced by the default 1")
        return 1
    return n


def translate(info: Infotext, family: InfotextFamily) -> A1111Settings:
    """Our settings for an infotext made with a model of ``family`` (sd1, sd2, sdxl)."""
    if family not in INFOTEXT_FAMILIES:
        raise ValueError(f"family={family!r}; use one of {', '.join(INFOTEXT_FAMILIES)}")
    fam = FAMILIES[family]
    report: list[str] = []
    version = info.fields.get("Version", "")
    forge = bool(_FORGE_VERSION.match(version))
    tool = "Forge" if forge else "A1111"
    report.append(f"made with {tool}" + (f" (Version: {_cut(version)})" if version else " (no Version field: read as A1111)"))

    n = _clip_skip(info, family, forge, report)
    translation = from_forge(fam, n) if forge else from_a1111(fam, n)
    shown = f"Clip skip: {n}" if "Clip skip" in info.fields else "no Clip skip field (= 1)"
    report.append(f"{shown} -> clip_skip {translation.clip_skip} ({translation.applies_to}) on {fam.label}")
    if translation.note:
        report.append(f"note: {translation.note}")

    emphasis = info.fields.get("Emphasis", "Original")
    weighting = EMPHASIS_WEIGHTING.get(emphasis.strip().lower())
    if weighting is None:
        info.unreadable.append(f"Emphasis: {_shown(emphasis)}")
        report.append(f"Emphasis: {_shown(emphasis)} is not Original, No norm or None; using a1111")
        weighting = "a1111"
    else:
        report.append(f"Emphasis: {emphasis.strip()} -> weighting {weighting}")
    report.append("chunking a1111 (A1111's comma backtrack" + (", Forge: always 20)" if forge else ")"))

    steps = _number(info, "Steps", int, DEFAULTS["steps"], report, RANGES["steps"])
    cfg = _number(info, "CFG scale", float, DEFAULTS["cfg"], report, RANGES["cfg"])
    seed = _number(info, "Seed", int, DEFAULTS["seed"], report, RANGES["seed"])
    width, height = _size(info, report)
    report.append(f"steps {steps}, cfg {cfg:g}, seed {seed}, size {width}x{height}"
                  + (f", sampler {_cut(info.fields['Sampler'])}" if "Sampler" in info.fields else "")
                  + (f", schedule type {_cut(info.fields['Schedule type'])}" if "Schedule type" in info.fields else ""))

    tags = find_tags(info.positive)
    lora_tags = [f"{t.name}:{t.weight or '1'}" for t in tags if t.kind in ("lora", "lyco")]
    if tags:
        listed = ", ".join(_cut(f"{t.kind} {t.describe()}", 80) for t in tags[:LISTED_TAGS])
        more = f" and {len(tags) - LISTED_TAGS} more" if len(tags) > LISTED_TAGS else ""
        report.append(f"{len(tags)} extra-network tag(s) kept in positive (our encoders remove them under a1111 "
                      f"weighting): {listed}{more}; load the LoRAs with a LoRA loader")
    if find_tags(info.negative):
        report.append("note: the negative prompt holds <...> tags: A1111 encodes those as words (it removes tags "
                      "from the positive prompt only); our encoders remove them under a1111 weighting")
    for key in ("Hires prompt", "Hires negative prompt", "Hires upscale", "Hires steps", "Denoising strength"):
        if key in info.fields:
            report.append(f"{key}: {_cut(info.fields[key])} (a hires pass: not reproduced by these outputs)")
    if not info.positive and not info.negative and not info.fields:
        report.append("nothing readable in the infotext")
    report += [f"unreadable: {u}" for u in info.unreadable]
    return A1111Settings(
        info.positive, info.negative, translation.clip_skip, translation.applies_to, weighting, "a1111",
        steps, cfg, seed, width, height, lora_tags, report,
    )
