"""A1111 extra-network tags (``<lora:name:0.8>``, ``<lyco:...>``, ``<hypernet:...>``, any ``<kind:args>``).

A1111 1.10 (``modules/extra_networks.py``, ``parse_prompt``) removes every ``<word:anything but '>'>`` from
the positive prompt before the prompt is scheduled and encoded, and applies the network instead; the text
left behind keeps the spaces around the tag. A text encoder cannot apply a LoRA, so here the tags are
only found, removed and reported; the user loads the LoRA with a LoRA loader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TAG = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class NetworkTag:
    """One tag: ``kind`` (lora, lyco, hypernet, ...) and its ':'-separated arguments as written."""

    kind: str
    args: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.args[0] if self.args else ""

    @property
    def weight(self) -> str:
        """The first positional weight as written ('' when the tag has none; A1111 then uses 1)."""
        positional = [a for a in self.args[1:] if "=" not in a]
        return positional[0] if positional else ""

    def describe(self) -> str:
        """``name weight`` (``name`` alone without a weight), for status lines."""
        return f"{self.name} {self.weight}".strip()


def _tag_end(prompt: str) -> int:
    """Where tags can end: after the last '>'. A tag's ``[^>]+`` read from each '<' after it would scan to the
    end of the prompt and fail, once per '<' (quadratic on ``<a:<a:<a:...``); before it, it always finds one."""
    return prompt.rfind(">") + 1


def find_tags(prompt: str) -> list[NetworkTag]:
    """Every extra-network tag in ``prompt``, in order."""
    return [NetworkTag(m.group(1), tuple(m.group(2).split(":"))) for m in _TAG.finditer(prompt, 0, _tag_end(prompt))]


def strip_tags(prompt: str) -> tuple[str, list[NetworkTag]]:
    """``prompt`` without its tags (exactly the text A1111 encodes), and the tags removed."""
    end = _tag_end(prompt)
    return _TAG.sub("", prompt[:end]) + prompt[end:], find_tags(prompt)


def tags_note(tags: list[NetworkTag], removed: bool) -> str:
    """The status line for found tags ('' when there are none)."""
    if not tags:
        return ""
    by_kind: dict[str, list[str]] = {}
    for tag in tags:
        by_kind.setdefault("LoRA" if tag.kind in ("lora", "lyco") else tag.kind, []).append(tag.describe())
    found = "; ".join(f"{kind} tags found: {', '.join(names)}" for kind, names in by_kind.items())
    action = "removed from the encoded text, as A1111 does" if removed else "encoded as words, as ComfyUI does"
    return f"{found} ({action}); apply them with a LoRA loader"
