"""The prompt an image was made from, read from its metadata (DESIGN 3).

- ComfyUI: the API graph in the PNG text chunk ``prompt`` (WebP: EXIF tag 0x0110 ``prompt:{json}``). The
  prompt is the text of the encoder behind a sampler's ``positive`` input (KSampler, KSamplerAdvanced,
  SamplerCustom, CFGGuider, ...; a ``*Guider`` node's ``conditioning`` for BasicGuider), followed through
  conditioning nodes (ControlNet, FluxGuidance, Combine, ...) to the encoder's ``text_g`` (SDXL encoders,
  ours included), ``text``, ``clip_l`` or ``prompt``, and through links to primitive and string nodes.
  With several samplers, the most downstream one wins (the hires-fix or refiner pass that made the image).
- A1111/Forge: the ``parameters`` text (PNG chunk; JPEG/WebP: EXIF UserComment): the text before the line
  starting "Negative prompt:", or before the "Steps:" line when there is no negative prompt.
The ComfyUI graph wins when both are present.

Hostile metadata is bounded: a graph JSON over ``MAX_GRAPH_CHARS`` or nested deeper than Python's JSON reader
goes is refused with that reason; A1111 ``parameters`` are read up to ``MAX_PARAMETERS_CHARS``; every walk is
iterative and visits each node once (linear in the graph); string nodes are resolved once each (memoised),
links that loop back are left out, and a prompt is cut at ``MAX_PROMPT_CHARS`` (CLIP reads 75 tokens) with a
note saying so (:attr:`FoundPrompt.note`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..text.pipeline import WEIGHTING_SYNTAX

_TEXT_INPUTS = ("text_g", "text", "clip_l", "prompt")  # an encoder's prompt input, in preference order
_STRING_INPUTS = ("value", "text", "string", "prompt", "text_g", "clip_l", "string_a")
MAX_GRAPH_CHARS = 8 * 2**20  # ComfyUI graphs of big workflows are a few hundred KB
MAX_PARAMETERS_CHARS = 64 * 1024  # A1111 parameters: the prompt comes first; the rest is settings
MAX_PROMPT_CHARS = 4096  # about 1,000 tokens; CLIP reads 75
EXIF_USER_COMMENT, EXIF_IFD, EXIF_COMFY_PROMPT = 0x9286, 0x8769, 0x0110


@dataclass(frozen=True)
class FoundPrompt:
    """A prompt from metadata: the text, its weighting syntax (comfy, a1111, none), and where it was."""

    text: str
    syntax: str
    source: str  # "comfyui" or "a1111"
    note: str = ""  # what was done to it (cut to MAX_PROMPT_CHARS, a looping link left out), else ""


def prompt_from_image(img) -> FoundPrompt:
    """The prompt of an open pillow image; ValueError with the reason when there is none."""
    info = getattr(img, "text", None) or img.info or {}  # PngImageFile.text includes chunks after the pixels
    graph_text = info.get("prompt")
    params = info.get("parameters")
    if graph_text is None or params is None:
        exif_graph, exif_params = _from_exif(img)
        graph_text = graph_text if graph_text is not None else exif_graph
        params = params if params is not None else exif_params
    reason = "no prompt in the metadata (no ComfyUI 'prompt' graph, no A1111 'parameters')"
    if isinstance(graph_text, bytes):
        graph_text = graph_text.decode("utf-8", "replace")
    if isinstance(graph_text, str):
        graph, reason = _parse_graph(graph_text)
        found = prompt_from_graph(graph) if isinstance(graph, dict) else None
        if found is not None:
            return found
        if graph is not None:
            reason = "the ComfyUI graph has no sampler whose positive input leads to a text prompt"
    if isinstance(params, str):
        cut = len(params) > MAX_PARAMETERS_CHARS
        text = prompt_from_parameters(params[:MAX_PARAMETERS_CHARS])
        if text:
            text, note = _cap(text)
            if cut:
                read = f"only the first {MAX_PARAMETERS_CHARS:,} of {len(params):,} characters of A1111 parameters were read"
                note = f"{read}; {note}" if note else read
            return FoundPrompt(text, "a1111", "a1111", note)
        reason = "the A1111 'parameters' metadata has an empty prompt"
    raise ValueError(reason)


def _parse_graph(graph_text: str) -> tuple[object, str]:
    """(parsed graph or None, reason when None) for the ComfyUI ``prompt`` metadata text."""
    if len(graph_text) > MAX_GRAPH_CHARS:
        return None, (
            f"the ComfyUI 'prompt' metadata is {len(graph_text):,} characters; the limit is {MAX_GRAPH_CHARS:,} "
            "(not a ComfyUI graph)"
        )
    try:
        return json.loads(graph_text), ""
    except RecursionError:
        return None, "the ComfyUI 'prompt' metadata is nested too deeply to be a ComfyUI graph (JSON nesting over ~1,000 levels)"
    except ValueError:
        return None, "the ComfyUI 'prompt' metadata is not valid JSON"


def _cap(text: str) -> tuple[str, str]:
    """(text cut to MAX_PROMPT_CHARS, note saying so, or "")."""
    if len(text) <= MAX_PROMPT_CHARS:
        return text, ""
    return text[:MAX_PROMPT_CHARS], f"the prompt was cut from {len(text):,} to {MAX_PROMPT_CHARS:,} characters"


def a1111_parameters(img) -> str | None:
    """The A1111/Forge ``parameters`` text of an open pillow image (PNG text chunk, or JPEG/WebP EXIF
    UserComment), or None when it has none."""
    info = getattr(img, "text", None) or img.info or {}
    params = info.get("parameters")
    if isinstance(params, str):
        return params
    return _from_exif(img)[1]


def _from_exif(img) -> tuple[str | None, str | None]:
    """(ComfyUI graph JSON, A1111 parameters) from EXIF, as ComfyUI's WebP and A1111's JPEG/WebP store them."""
    try:
        exif = img.getexif()
    except (AttributeError, OSError, ValueError, SyntaxError):
        return None, None
    graph = None
    value = exif.get(EXIF_COMFY_PROMPT)
    if isinstance(value, str) and value.startswith("prompt:"):
        graph = value[len("prompt:") :]
    try:
        comment = exif.get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
    except (KeyError, OSError, ValueError, SyntaxError):
        comment = None
    if isinstance(comment, (bytes, bytearray, str)):
        comment = comment[: 8 + 4 * MAX_PARAMETERS_CHARS]  # the prefix, then at most that many characters
    return graph, decode_user_comment(comment) if comment else None


def decode_user_comment(raw) -> str | None:
    """EXIF UserComment: 8-byte charset prefix, then text (A1111 writes "UNICODE" + UTF-16 via piexif)."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, (bytes, bytearray)) or len(raw) < 8:
        return None
    prefix, body = bytes(raw[:8]), bytes(raw[8:])
    if prefix.startswith(b"UNICODE"):
        # The byte order is not recorded; take the decoding with more plain-ASCII characters.
        options = [body.decode(enc, errors="replace") for enc in ("utf-16-be", "utf-16-le")]
        return max(options, key=lambda s: sum(32 <= ord(c) < 127 or c == "\n" for c in s))
    return body.decode("utf-8", errors="replace").rstrip("\x00")


def prompt_from_parameters(params: str) -> str:
    """A1111 ``parameters``: the text before "Negative prompt:" (or before the "Steps:" line)."""
    lines = params.strip().split("\n")
    end = next((i for i, line in enumerate(lines) if line.startswith("Negative prompt:")), None)
    if end is None:
        end = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].startswith("Steps:")), len(lines))
    return "\n".join(lines[:end]).strip()


def _is_link(value) -> bool:
    """A link in an API graph: [source node id, output index]."""
    if not (isinstance(value, list) and len(value) == 2):
        return False
    return isinstance(value[0], (str, int)) and isinstance(value[1], int)


def _conditioning_links(inputs: dict) -> list:
    """Links into a node's conditioning inputs: ``positive`` first, then ``conditioning*`` in order."""
    names = (["positive"] if "positive" in inputs else []) + [n for n in inputs if n.startswith("conditioning")]
    return [inputs[n] for n in names if _is_link(inputs[n])]


def prompt_from_graph(graph: dict) -> FoundPrompt | None:
    """The positive prompt of a ComfyUI API graph ({id: {"class_type", "inputs"}}), or None."""
    nodes = {str(k): v for k, v in graph.items() if isinstance(v, dict) and isinstance(v.get("inputs"), dict)}
    feeds_conditioning = set()
    for node in nodes.values():
        for name, value in node["inputs"].items():
            if _is_link(value) and (name in ("positive", "negative") or name.startswith("conditioning")):
                feeds_conditioning.add(str(value[0]))
    samplers = []
    for nid, node in nodes.items():
        inputs = node["inputs"]
        guider = str(node.get("class_type", "")).endswith("Guider") and _is_link(inputs.get("conditioning"))
        if (_is_link(inputs.get("positive")) or guider) and nid not in feeds_conditioning:
            samplers.append(nid)
    depth = _depths(nodes)
    strings = _Strings(nodes)
    for nid in sorted(samplers, key=lambda n: -depth.get(n, 0)):  # stable: graph order among equals
        found = _encoder_text(nodes, _conditioning_links(nodes[nid]["inputs"])[:1], strings)
        if found is not None:
            return found
    return None


def _upstream(node: dict, nodes: dict) -> list[str]:
    return [str(v[0]) for v in node["inputs"].values() if _is_link(v) and str(v[0]) in nodes]


def _depths(nodes: dict) -> dict:
    """Longest chain of links above each node, in one depth-first pass (each node finished once, so linear
    in nodes + links); a link that closes a cycle counts as no link."""
    depth: dict[str, int] = {}
    on_path: set[str] = set()
    for start in nodes:
        if start in depth:
            continue
        stack = [(start, False)]
        while stack:
            nid, done = stack.pop()
            if done:
                on_path.discard(nid)
                depth[nid] = 1 + max((depth.get(u, 0) for u in _upstream(nodes[nid], nodes)), default=0)
                continue
            if nid in depth or nid in on_path:
                continue
            on_path.add(nid)
            stack.append((nid, True))
            stack += [(u, False) for u in _upstream(nodes[nid], nodes) if u not in depth and u not in on_path]
    return depth


def _encoder_text(nodes: dict, links: list, strings: "_Strings") -> FoundPrompt | None:
    """Walk conditioning links up to text encoders (each node once); texts of several encoders (Combine)
    are joined, up to MAX_PROMPT_CHARS."""
    texts, syntax, seen, stack = [], "comfy", set(), [str(link[0]) for link in reversed(links)]
    size = 0
    while stack and size < MAX_PROMPT_CHARS:
        nid = stack.pop()
        if nid in seen or nid not in nodes:
            continue
        seen.add(nid)
        inputs = nodes[nid]["inputs"]
        name = next((n for n in _TEXT_INPUTS if n in inputs), None)
        if name is not None:
            text = strings.value(inputs[name])
            if text and text.strip() and text not in texts:
                texts.append(text)
                size += len(text) + 2
                syntax = WEIGHTING_SYNTAX.get(inputs.get("weighting"), "comfy") if len(texts) == 1 else syntax
            continue
        stack += [str(link[0]) for link in reversed(_conditioning_links(inputs))]
    if not texts:
        return None
    text, note = _cap(", ".join(texts))
    if strings.cut and not note:
        note = f"a string node's text was cut to {MAX_PROMPT_CHARS:,} characters"
    if strings.cycle:
        note = "; ".join(n for n in (note, "string nodes link in a cycle; the looping link was left out") if n)
    return FoundPrompt(text, syntax, "comfyui", note)


# Two-input string nodes: (first, second) input names, joined with the node's ``delimiter`` (core
# StringConcatenate and the usual custom-node spellings).
_CONCAT_INPUTS = (("string_a", "string_b"), ("text_a", "text_b"), ("text1", "text2"), ("string1", "string2"))


class _Strings:
    """String values of a graph's nodes, each node resolved once (memoised), without recursion.

    A node's string: a concatenation node joins its two inputs with ``delimiter``; other nodes give their
    first ``_STRING_INPUTS`` input. Links are followed to the node they name; a link back into a node
    being resolved (a cycle) gives "" and sets :attr:`cycle`; every value is cut to MAX_PROMPT_CHARS
    (sets :attr:`cut`), so a chain that doubles its text per node stays small and linear.
    """

    def __init__(self, nodes: dict):
        self.nodes = nodes
        self.memo: dict[str, str | None] = {}
        self.cut = self.cycle = False

    def _parts(self, nid: str) -> tuple[list, str] | None:
        """(input values to join, delimiter) of a node, or None when it gives no string."""
        inputs = self.nodes[nid]["inputs"]
        for a, b in _CONCAT_INPUTS:
            if a in inputs and b in inputs:
                sep = inputs.get("delimiter", "")
                return [inputs[a], inputs[b]], sep if isinstance(sep, str) else ""
        name = next((n for n in _STRING_INPUTS if n in inputs), None)
        return None if name is None else ([inputs[name]], "")

    def _literal(self, value) -> str | None:
        if _is_link(value):
            return self.memo.get(str(value[0]))
        return value if isinstance(value, str) else None

    def value(self, value) -> str | None:
        """A string input's value: a literal, or the string of the node a link names."""
        if not _is_link(value):
            return value if isinstance(value, str) else None
        start = str(value[0])
        active: set[str] = set()
        stack = [(start, False)]
        while stack:
            nid, ready = stack.pop()
            if nid in self.memo:
                continue
            if nid not in self.nodes:
                self.memo[nid] = None
                continue
            parts = self._parts(nid)
            if parts is None:
                self.memo[nid] = None
                continue
            if ready:
                active.discard(nid)
                values = [self._literal(v) for v in parts[0]]
                if len(values) == 1:
                    text = values[0]
                else:
                    text = parts[1].join(v or "" for v in values)
                if text is not None and len(text) > MAX_PROMPT_CHARS:
                    text, self.cut = text[:MAX_PROMPT_CHARS], True
                self.memo[nid] = text
                continue
            if nid in active:
                continue
            active.add(nid)
            stack.append((nid, True))
            for v in parts[0]:
                if _is_link(v):
                    up = str(v[0])
                    if up in active:
                        self.cycle = True  # resolved as "" when this node is joined
                    elif up not in self.memo:
                        stack.append((up, False))
        return self.memo.get(start)
