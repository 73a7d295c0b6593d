"""The prompt an image was made from, read from its metadata (DESIGN 3).

- ComfyUI: the API graph in the PNG text chunk ``prompt`` (WebP: EXIF tag 0x0110 ``prompt:{json}``). The
  prompt is the text of the encoder behind a sampler's ``positive`` input (KSampler, KSamplerAdvanced,
  SamplerCustom, CFGGuider, ...; a ``*Guider`` node's ``conditioning`` for BasicGuider), followed through
  conditioning nodes (ControlNet, FluxGuidance, Combine, ...) to the encoder's ``text_g`` (SDXL encoders,
  ours included), ``text``, ``clip_l`` or ``prompt``, and through links to primitive and string nodes.
  With several samplers, the most downstream one wins (the hires-fix or refiner pass that made the image).
- A1111/Forge: the ``parameters`` text (PNG chunk; JPEG/WebP: EXIF UserComment): the text before the line
  starting "Negative prompt:", or before the "Steps:" line when there is no negative prompt.
The ComfyUI graph wins when both are present. Graph walks are iterative and bounded (hostile files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .prompt import WEIGHTING_SYNTAX

_TEXT_INPUTS = ("text_g", "text", "clip_l", "prompt")  # an encoder's prompt input, in preference order
_STRING_INPUTS = ("value", "text", "string", "prompt", "text_g", "clip_l", "string_a")
_MAX_STEPS = 10_000  # nodes visited per walk
EXIF_USER_COMMENT, EXIF_IFD, EXIF_COMFY_PROMPT = 0x9286, 0x8769, 0x0110


@dataclass(frozen=True)
class FoundPrompt:
    """A prompt from metadata: the text, its weighting syntax (comfy, a1111, none), and where it was."""

    text: str
    syntax: str
    source: str  # "comfyui" or "a1111"


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
    if graph_text is not None:
        try:
            graph = json.loads(graph_text)
        except ValueError:
            graph, reason = None, "the ComfyUI 'prompt' metadata is not valid JSON"
        found = prompt_from_graph(graph) if isinstance(graph, dict) else None
        if found is not None:
            return found
        if graph is not None:
            reason = "the ComfyUI graph has no sampler whose positive input leads to a text prompt"
    if isinstance(params, str):
        text = prompt_from_parameters(params)
        if text:
            return FoundPrompt(text, "a1111", "a1111")
        reason = "the A1111 'parameters' metadata has an empty prompt"
    raise ValueError(reason)


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
    for nid in sorted(samplers, key=lambda n: -depth.get(n, 0)):  # stable: graph order among equals
        found = _encoder_text(nodes, _conditioning_links(nodes[nid]["inputs"])[:1])
        if found is not None:
            return found
    return None


def _depths(nodes: dict) -> dict:
    """Longest chain of links above each node (cycles and overlong chains are cut, not followed)."""
    depth: dict[str, int] = {}
    for start in nodes:
        stack, on_path, steps = [(start, False)], set(), 0
        while stack and steps < _MAX_STEPS:
            nid, done = stack.pop()
            steps += 1
            if done:
                on_path.discard(nid)
                ups = [str(v[0]) for v in nodes[nid]["inputs"].values() if _is_link(v) and str(v[0]) in nodes]
                depth[nid] = 1 + max((depth.get(u, 0) for u in ups), default=0)
                continue
            if nid in depth or nid in on_path:
                continue
            on_path.add(nid)
            stack.append((nid, True))
            stack += [(str(v[0]), False) for v in nodes[nid]["inputs"].values() if _is_link(v) and str(v[0]) in nodes]
    return depth


def _encoder_text(nodes: dict, links: list) -> FoundPrompt | None:
    """Walk conditioning links up to text encoders; texts of several encoders (Combine) are joined."""
    texts, syntax, seen, stack = [], "comfy", set(), [str(link[0]) for link in reversed(links)]
    while stack and len(seen) < _MAX_STEPS:
        nid = stack.pop()
        if nid in seen or nid not in nodes:
            continue
        seen.add(nid)
        inputs = nodes[nid]["inputs"]
        name = next((n for n in _TEXT_INPUTS if n in inputs), None)
        if name is not None:
            text = _string_value(nodes, inputs[name])
            if text and text.strip() and text not in texts:
                texts.append(text)
                syntax = WEIGHTING_SYNTAX.get(inputs.get("weighting"), "comfy") if len(texts) == 1 else syntax
            continue
        stack += [str(link[0]) for link in reversed(_conditioning_links(inputs))]
    return FoundPrompt(", ".join(texts), syntax, "comfyui") if texts else None


def _string_value(nodes: dict, value, steps: int = 0) -> str | None:
    """A string input's value: literal, or through links to primitive/string nodes (concatenation too)."""
    while _is_link(value) and steps < 100:
        node = nodes.get(str(value[0]))
        if node is None:
            return None
        inputs = node["inputs"]
        if "string_a" in inputs and "string_b" in inputs:  # StringConcatenate
            a = _string_value(nodes, inputs["string_a"], steps + 1) or ""
            b = _string_value(nodes, inputs["string_b"], steps + 1) or ""
            sep = inputs.get("delimiter", "")
            return a + (sep if isinstance(sep, str) else "") + b
        name = next((n for n in _STRING_INPUTS if n in inputs), None)
        if name is None:
            return None
        value, steps = inputs[name], steps + 1
    return value if isinstance(value, str) else None
