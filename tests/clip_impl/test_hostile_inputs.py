"""Hostile inputs, round 2 (issue 15): metadata graphs, prompts, folders, images and files that used to
hang, take super-linear time, blow up memory or crash. Inputs are generated here, small on disk; where the
defect was time or memory the work runs in a child process that is killed past a time and RSS bound
(``tests/bounded.py``), so a regression fails the test instead of the machine.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from safetensors.torch import save_file

from helpers.bounded import HAS_PROC, describe, run_bounded
from clip_suite.clip_impl.images import preprocess
from clip_suite.clip_impl.folders import walk_once
from clip_suite.clip_impl.images.metadata import MAX_PROMPT_CHARS, prompt_from_graph, prompt_from_image
from clip_suite.clip_impl.weights import read_lora
from clip_suite.clip_impl.text.syntax import parse_a1111
from clip_suite.clip_impl.weights.files import ModelFileError

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="the time/RSS bounds read /proc (Linux)")


def _png(path: Path, size=(8, 8), mode="RGB", **text) -> Path:
    info = PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    Image.new(mode, size).save(path, pnginfo=info)
    return path


def _sampler_to(node_id: str) -> dict:
    return {"3": {"class_type": "KSampler", "inputs": {"positive": [node_id, 0], "negative": [node_id, 0]}}}


# ------------------------------------------------------------------------------------------------ 1
def _doubling_chain(levels: int) -> dict:
    """An encoder whose text comes from a chain of StringConcatenate nodes, each joining the next twice."""
    graph = _sampler_to("6")
    graph["6"] = {"class_type": "CLIPTextEncode", "inputs": {"text": ["c0", 0], "clip": ["4", 1]}}
    for i in range(levels):
        nxt = f"c{i + 1}" if i + 1 < levels else "leaf"
        graph[f"c{i}"] = {"class_type": "StringConcatenate", "inputs": {"string_a": [nxt, 0], "string_b": [nxt, 0], "delimiter": ","}}
    graph["leaf"] = {"class_type": "PrimitiveString", "inputs": {"value": "fox"}}
    return graph


def _self_feeding(cls="StringConcatenate", a="string_a", b="string_b") -> dict:
    graph = _sampler_to("6")
    graph["6"] = {"class_type": "CLIPTextEncode", "inputs": {"text": ["9", 0], "clip": ["4", 1]}}
    graph["9"] = {"class_type": cls, "inputs": {a: ["9", 0], b: "a red fox", "delimiter": " "}}
    return graph


def test_string_graphs_that_double_or_feed_themselves_resolve_once_and_are_capped(tmp_path):
    paths = [
        _png(tmp_path / "chain26.png", prompt=json.dumps(_doubling_chain(26))),
        _png(tmp_path / "chain60.png", prompt=json.dumps(_doubling_chain(60))),
        _png(tmp_path / "self.png", prompt=json.dumps(_self_feeding())),
        _png(tmp_path / "self_text.png", prompt=json.dumps(_self_feeding("JoinStrings", "text_a", "text_b"))),
    ]
    code = """
        import json, sys
        from PIL import Image
        from clip_suite.clip_impl.images.metadata import prompt_from_image
        out = []
        for p in sys.argv[1:]:
            with Image.open(p) as img:
                f = prompt_from_image(img)
            out.append([len(f.text), f.text[:40], f.note])
        print(json.dumps(out))
    """
    o = run_bounded(code, timeout=30, max_rss_mb=1200, args=paths)
    assert o.ok, describe(o)
    (n26, head26, note26), (n60, _, note60), (nself, self_text, self_note), (_, text2, note2) = json.loads(o.stdout)
    assert 0 < n26 <= MAX_PROMPT_CHARS and head26.startswith("fox,fox") and "cut" in note26
    assert 0 < n60 <= MAX_PROMPT_CHARS and "cut" in note60
    assert self_text == " a red fox" and "cycle" in self_note
    assert text2 == " a red fox" and "cycle" in note2


# ------------------------------------------------------------------------------------------------ 2
def test_a_graph_of_20000_nodes_between_sampler_and_encoder_is_walked_once(tmp_path):
    n = 20_000
    graph = _sampler_to("n0")
    for i in range(n):
        graph[f"n{i}"] = {"class_type": "ConditioningSetAreaStrength", "inputs": {"conditioning": [f"n{i + 1}", 0], "strength": 1.0}}
    graph[f"n{n}"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "deep fox", "clip": ["4", 1]}}
    path = _png(tmp_path / "deep.png", prompt=json.dumps(graph))
    code = """
        import sys
        from PIL import Image
        from clip_suite.clip_impl.images.metadata import prompt_from_image
        with Image.open(sys.argv[1]) as img:
            print(prompt_from_image(img).text)
    """
    o = run_bounded(code, timeout=20, max_rss_mb=1200, args=[path])
    assert o.ok and o.stdout.strip() == "deep fox", describe(o)


def test_graph_cycles_in_conditioning_do_not_hang():
    graph = _sampler_to("a")
    graph["a"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["b", 0], "conditioning_2": ["c", 0]}}
    graph["b"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["a", 0], "conditioning_2": ["c", 0]}}
    graph["c"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "loop fox", "clip": ["4", 1]}}
    assert prompt_from_graph(graph).text == "loop fox"


# ------------------------------------------------------------------------------------------------ 4
def test_a1111_parser_is_linear_in_nesting():
    # 40,000 nested "(a:" took minutes (each closing multiplied every run since its opening).
    code = """
        import sys
        from clip_suite.clip_impl.text.syntax import parse_a1111
        for text in ("(a:" * 40000, "(a " * 40000 + ")" * 40000, "[a " * 40000, "(a [b " * 20000):
            segs = parse_a1111(text)
            assert segs and "".join(s.text for s in segs).replace(" ", "").replace(":", "").strip("ab") == ""
        print("ok")
    """
    o = run_bounded(code, timeout=20, max_rss_mb=1500)
    assert o.ok and o.stdout.strip() == "ok", describe(o)


def _a1111_reference(text):
    """The quadratic rule, run for run: every closing bracket multiplies each run since its opening (the
    parser before issue 15, kept here as the reference)."""
    from clip_suite.clip_impl.text.syntax import _A1111_TOKEN, _BREAK_SPLIT, _parse_weight

    runs, round_open, square_open, pos = [], [], [], 0

    def multiply(start, factor):
        for run in runs[start:]:
            run[1] *= factor

    while pos < len(text):
        m = _A1111_TOKEN.match(text, pos)
        token, literal = m.group(0), m.group(1)
        if token.startswith("\\"):
            runs.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(runs))
        elif token == "[":
            square_open.append(len(runs))
        elif literal is not None and round_open:
            factor = _parse_weight(literal)
            if factor is None:
                runs.append([":", 1.0])
                pos = m.start() + 1
                continue
            multiply(round_open.pop(), factor)
        elif token == ")" and round_open:
            multiply(round_open.pop(), 1.1)
        elif token == "]" and square_open:
            multiply(square_open.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(_BREAK_SPLIT.split(token)):
                if i:
                    runs.append(["BREAK", -1.0])
                runs.append([part, 1.0])
        pos = m.end()
    for start in round_open:
        multiply(start, 1.1)
    for start in square_open:
        multiply(start, 1 / 1.1)
    return runs


def _runs(segments):
    return [("BREAK", -1.0) if s.is_break else (s.text, s.weight) for s in segments]


def _merged(runs):
    out = []
    for txt, w in runs or [["", 1.0]]:
        if out and out[-1][1] == w:
            out[-1] = (out[-1][0] + txt, w)
        else:
            out.append((txt, w))
    return out


def test_a1111_weights_equal_the_run_by_run_rule():
    """Exactly (A1111's rounding) for ordinary prompts; past the exact budget the same products to 1e-12."""
    import random

    rng = random.Random(5)
    pieces = ["(", ")", "[", "]", ":", ":1.2)", ":0.5)", "a", " b ", "BREAK", "\\(", "\\", ",", "1.1"]
    for _ in range(400):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        assert _runs(parse_a1111(text)) == _merged(_a1111_reference(text)), text
    deep = "(a [b " * 300 + "(c:1.3) " + "] d)" * 300 + "(e " * 300  # ~450,000 products
    # Equal weights may differ in the last bit here, so neighbours may merge differently: compare per character.
    ours = [(c, w) for t, w in _runs(parse_a1111(deep)) for c in t]
    ref = [(c, w) for t, w in _a1111_reference(deep) for c in t]
    assert [c for c, _ in ours] == [c for c, _ in ref]
    assert all(w == pytest.approx(r, rel=1e-12) for (_, w), (_, r) in zip(ours, ref))


# ------------------------------------------------------------------------------------------------ 5
def test_comfy_packing_of_one_huge_group_is_linear():
    code = """
        from clip_suite.clip_impl.text.chunking import PromptToken, pack_comfy
        group = [PromptToken(320)] * 1_500_000
        chunks = pack_comfy([group])
        assert len(chunks) == 20_000 and all(len(c.body) == 75 for c in chunks)
        print("ok")
    """
    o = run_bounded(code, timeout=15, max_rss_mb=1500)
    assert o.ok and o.stdout.strip() == "ok", describe(o)


# ------------------------------------------------------------------------------------------------ 6
def _symlink_maze(root: Path) -> Path:
    (root / "sub" / "deep").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (root / name).symlink_to(".")
    (root / "sub" / "up").symlink_to("..")
    (root / "sub" / "deep" / "top").symlink_to("../..")
    (root / "broken").symlink_to("nowhere")
    save_file({"emb_params": torch.ones(2, 768)}, root / "sub" / "deep" / "fox.safetensors")
    return root


def test_symlink_loops_are_walked_once(tmp_path):
    root = _symlink_maze(tmp_path / "emb")
    seen = [os.path.realpath(r) for r, _, _ in walk_once(root)]
    assert sorted(seen) == sorted({str((root / p).resolve()) for p in ("", "sub", "sub/deep")})
    code = """
        import sys
        from clip_suite.clip_impl.text.embeddings import EmbeddingLibrary, folder_state
        from clip_suite.clip_impl.text.pipeline import prompt_chunks
        lib = EmbeddingLibrary([sys.argv[1]])
        files = [f for _, fs in folder_state([sys.argv[1]]) for f in fs]
        assert len(files) == 1, files
        assert list(lib.names()) == ["fox"]
        found = prompt_chunks("a embedding:sub/deep/fox cat", embeddings=lib, width=768)
        assert sum(len(c.body) for c in found.chunks) == 4 and not found.warnings, found.warnings
        found = prompt_chunks("a fox cat", weighting="a1111", embeddings=lib, width=768)
        assert sum(len(c.body) for c in found.chunks) == 4
        print("ok")
    """
    o = run_bounded(code, timeout=30, max_rss_mb=1200, args=[root])
    assert o.ok and o.stdout.strip() == "ok", describe(o)


# ------------------------------------------------------------------------------------------------ 7
def test_wide_strips_are_refused_or_cropped_first_in_bounded_memory(tmp_path):
    Image.new("RGB", (400_000, 1), (200, 10, 10)).save(tmp_path / "strip.png")
    Image.new("RGB", (1, 400_000)).save(tmp_path / "tall.png")
    Image.new("RGB", (3000, 60), (10, 200, 10)).save(tmp_path / "wide50.png")  # 50:1 is scored
    code = """
        import sys
        from clip_suite.clip_impl.images.preprocess import load_image_file, preprocess_images
        for name in ("strip", "tall"):
            try:
                preprocess_images(load_image_file(sys.argv[1] + f"/{name}.png"), 224)
            except ValueError as e:
                assert "aspect ratio" in str(e) and "400,000:1" in str(e), e
            else:
                raise AssertionError("a 400,000:1 image was scored")
        x = preprocess_images(load_image_file(sys.argv[1] + "/wide50.png"), 336)
        assert x.shape == (1, 3, 336, 336)
        print("ok")
    """
    o = run_bounded(code, timeout=60, max_rss_mb=900, args=[tmp_path])
    assert o.ok and o.stdout.strip() == "ok", describe(o)


@pytest.mark.parametrize("shape,size", [((2, 3, 7, 300), 8), ((1, 3, 300, 7), 8), ((1, 3, 40, 900), 16), ((1, 3, 5, 320), 32)])
def test_wide_images_resize_only_the_centre_square_like_the_whole_image(shape, size):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    h, w = shape[2:]
    scale = size / min(h, w)
    new = (round(scale * h), round(scale * w))
    whole = torch.nn.functional.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    expected = whole[:, :, top : top + size, left : left + size]
    assert (preprocess.resize_crop(x, size) - expected).abs().max() < 1e-5


# ------------------------------------------------------------------------------------------------ 8
def _huge_blank_png(path: Path, width: int, height: int) -> Path:
    """A 1-bit greyscale PNG of width x height pixels, written row by row (a few KB on disk)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_images_near_pillows_limit_are_refused_or_reduced_in_bounded_memory(tmp_path):
    big = _huge_blank_png(tmp_path / "bomb.png", 13_000, 13_000)  # 169M pixels, just under pillow's error
    assert big.stat().st_size < 100_000
    _huge_blank_png(tmp_path / "large.png", 6_000, 4_000)  # 24M pixels: decoded, then reduced
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (3000, 3000), dtype=np.uint8)).resize((9000, 9000)).save(tmp_path / "big.jpg", quality=30)
    code = """
        import sys, warnings
        warnings.simplefilter("error")  # a raw DecompressionBombWarning would fail here
        from clip_suite.clip_impl.images.preprocess import load_image_file, preprocess_images
        d = sys.argv[1]
        try:
            load_image_file(d + "/bomb.png")
        except ValueError as e:
            assert "169,000,000 pixels" in str(e) and "at most" in str(e), e
        else:
            raise AssertionError("169M pixels decoded")
        for name in ("large.png", "big.jpg"):
            notes = []
            x = preprocess_images(load_image_file(d + "/" + name, notes), 224)
            assert x.shape == (1, 3, 224, 224) and notes, (name, notes)
            print(name, notes)
        print("ok")
    """
    o = run_bounded(code, timeout=90, max_rss_mb=1200, args=[tmp_path])
    assert o.ok and o.stdout.strip().endswith("ok"), describe(o)
    assert "reduced" in o.stdout and "JPEG was decoded at" in o.stdout


def test_decompression_bomb_warning_becomes_a_note(tmp_path):
    _png(tmp_path / "x.png", size=(40, 40))
    code = """
        import sys
        from PIL import Image
        Image.MAX_IMAGE_PIXELS = 1000  # 1,600 pixels: over the warning limit, under the error limit
        from clip_suite.clip_impl.images.preprocess import load_image_file
        notes = []
        load_image_file(sys.argv[1], notes)
        assert any("DecompressionBomb" in n or "decompression bomb" in n for n in notes), notes
        print("ok")
    """
    o = run_bounded(code, timeout=60, max_rss_mb=900, args=[tmp_path / "x.png"])
    assert o.ok and o.stdout.strip() == "ok" and "Warning" not in o.stderr, describe(o)


# ------------------------------------------------------------------------------------------------ 9
def test_huge_parameters_text_is_capped_before_parsing(tmp_path):
    prompt = "a fox, " * 3_000_000  # 21 MB of prompt
    path = _png(tmp_path / "params.png", parameters=prompt + "\nNegative prompt: x\nSteps: 20")
    code = """
        import sys
        from PIL import Image
        from clip_suite.clip_impl.images.metadata import prompt_from_image
        with Image.open(sys.argv[1]) as img:
            img.load()
            found = prompt_from_image(img)
        print(len(found.text), found.note)
    """
    o = run_bounded(code, timeout=30, max_rss_mb=1200, args=[path])
    assert o.ok, describe(o)
    length, note = o.stdout.split(" ", 1)
    assert 0 < int(length) <= MAX_PROMPT_CHARS and "of 21,000,0" in note and "cut" in note


# ----------------------------------------------------------------------------------------------- 11
def _hostile_embeddings(d: Path) -> dict[str, str]:
    """name -> what the warning must say; every file is a way an embedding can be wrong."""
    d.mkdir()
    save_file({"emb_params": torch.zeros(4, 0)}, d / "zerowide.safetensors")
    save_file({"emb_params": torch.zeros(0)}, d / "empty1d.safetensors")
    save_file({"clip_l": torch.zeros(2, 768), "clip_g": torch.full((2, 1280), float("nan"))}, d / "nang.safetensors")
    torch.save({"string_to_param": {}}, d / "nostp.pt")
    torch.save({"string_to_param": {"*": "text"}}, d / "strstp.pt")
    torch.save({1: torch.zeros(2, 768), 2: torch.zeros(3)}, d / "intkeys.pt")
    (d / "text.pt").write_text("this is a text file, not a pickle\n" * 20)
    (d / "passwd.pt").symlink_to("/etc/passwd")
    (d / "zero.pt").symlink_to("/dev/zero")
    (d / "loop.pt").symlink_to("loop.pt")
    os.mkfifo(d / "fifo.pt")
    cases = {"zerowide": "empty", "empty1d": "empty", "nostp": "string_to_param", "strstp": "", "intkeys": "no embedding",
             "text": "", "passwd": "", "zero": "not a regular file", "loop": "", "fifo": "not a regular file"}  # fmt: skip
    if hasattr(torch, "float8_e4m3fn"):
        save_file({"emb_params": torch.ones(2, 768).to(torch.float8_e4m3fn)}, d / "fp8.safetensors")
    return cases


def test_hostile_embedding_files_are_warnings_naming_the_file(tmp_path):
    d = tmp_path / "emb"
    cases = _hostile_embeddings(d)
    code = """
        import json, sys
        from clip_suite.clip_impl.text.embeddings import EmbeddingLibrary
        from clip_suite.clip_impl.text.pipeline import prompt_chunks
        lib = EmbeddingLibrary([sys.argv[1]])
        out = {}
        for name in json.loads(sys.argv[2]):
            for weighting, text in (("comfy", f"a embedding:{name} cat"), ("a1111", f"a {name} cat, {name}")):
                found = prompt_chunks(text, weighting=weighting, embeddings=lib, width=768)
                out[f"{name}/{weighting}"] = [sum(len(c.body) for c in found.chunks), found.warnings]
        fp8 = prompt_chunks("a embedding:fp8 cat", embeddings=lib, width=768)
        out["fp8"] = [sum(len(c.body) for c in fp8.chunks), fp8.warnings]
        print(json.dumps(out))
    """
    o = run_bounded(code, timeout=60, max_rss_mb=1200, args=[d, json.dumps(sorted(cases))])
    assert o.ok, describe(o)
    got = json.loads(o.stdout)
    for name, words in cases.items():
        count, warnings = got[f"{name}/comfy"]
        assert count == 2, (name, count)  # "a" and "cat": the reference left out
        assert any(f"{name}." in w and words in w for w in warnings), (name, warnings)
        count, warnings = got[f"{name}/a1111"]
        assert any(f"{name}." in w for w in warnings) or name == "loop", (name, warnings)
    if hasattr(torch, "float8_e4m3fn"):
        assert got["fp8"] == [4, []]  # float8 vectors are read (as float32), not a crash


def test_embedding_loads_outside_a_library_name_the_file(tmp_path):
    d = tmp_path / "emb"
    _hostile_embeddings(d)
    code = """
        import sys
        from pathlib import Path
        from clip_suite.clip_impl.text.embeddings import EmbeddingLibrary
        from clip_suite.clip_impl.weights.files import ModelFileError
        lib = EmbeddingLibrary([sys.argv[1]])
        for path in sorted(Path(sys.argv[1]).iterdir()):
            if path.stem == "fp8":
                continue
            try:
                lib.load(path)
            except ModelFileError as e:
                assert path.name in str(e), e
            else:
                raise AssertionError(f"{path.name} loaded")
        print("ok")
    """
    o = run_bounded(code, timeout=60, max_rss_mb=1200, args=[d])
    assert o.ok and o.stdout.strip() == "ok", describe(o)


# ----------------------------------------------------------------------------------------------- 12
@pytest.mark.parametrize(
    "tensors,message",
    [
        ({"up": torch.zeros(128, 0), "down": torch.zeros(0, 128)}, "rank 1 or more"),
        ({"up": torch.zeros(128, 4), "down": torch.zeros(4, 128), "alpha": torch.tensor([])}, "holds 0 values"),
        ({"up": torch.zeros(128, 4), "down": torch.zeros(4, 128), "alpha": torch.ones(4)}, "holds 4 values"),
        ({"up": torch.zeros(128, 4), "down": torch.zeros(4, 128), "alpha": torch.tensor(float("inf"))}, "finite"),
    ],
)
def test_lora_rank_zero_and_bad_alpha_name_the_file(tmp_path, tensors, message):
    prefix = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    names = {"up": ".lora_up.weight", "down": ".lora_down.weight", "alpha": ".alpha"}
    path = tmp_path / "bad_lora.safetensors"
    save_file({prefix + names[k]: v for k, v in tensors.items()}, path)
    with pytest.raises(ModelFileError, match=rf"bad_lora\.safetensors.*{message}"):
        read_lora(path)


# ----------------------------------------------------------------------------------------------- 14
def test_deeply_nested_metadata_says_so(tmp_path):
    path = _png(tmp_path / "deep.png", prompt="[" * 100_000 + "]" * 100_000)
    with Image.open(path) as img:
        with pytest.raises(ValueError, match="nested too deeply"):
            prompt_from_image(img)


# ----------------------------------------------------------------------------------------------- 15
def _tiff_as_png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path, format="TIFF")  # TIFF data under a .png name, as found in the wild
    return path


@pytest.mark.parametrize(
    "arr,outcome",
    [
        (np.full((6, 6), np.nan, np.float32), "NaN or infinite"),
        (np.full((6, 6), np.inf, np.float32), "NaN or infinite"),
        (np.full((6, 6), 1e9, np.float32), "values 1e\\+09"),
        (np.full((6, 6), -5, np.int32), "values -5"),
        (np.full((6, 6), 0.25, np.float32), 0.25),
        (np.full((6, 6), 51.0, np.float32), 51 / 255),
        (np.full((6, 6), 51, np.int32), 51 / 255),
        (np.full((6, 6), 13107, np.int32), 0.2),
    ],
)
def test_float_and_32bit_images_are_scaled_by_what_they_hold_or_refused(tmp_path, arr, outcome):
    path = _tiff_as_png(tmp_path / "x.png", arr)
    notes = []
    if isinstance(outcome, str):
        with pytest.raises(ValueError, match=outcome):
            preprocess.load_image_file(path, notes)
        return
    x = preprocess.load_image_file(path, notes)
    assert x.shape == (1, 6, 6, 3) and torch.allclose(x, torch.full_like(x, outcome), atol=1e-6)
    assert notes and "read as 0.." in notes[0]


def test_sixteen_bit_pngs_still_read_as_0_to_65535(tmp_path):
    Image.fromarray(np.full((4, 4), 13107, np.uint16)).save(tmp_path / "g16.png")
    x = preprocess.load_image_file(tmp_path / "g16.png")
    assert torch.allclose(x, torch.full_like(x, 0.2))


# ------------------------------------------------------------------------------------------------ 3
def test_fifos_and_devices_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    code = """
        import sys
        from clip_suite.clip_impl.images.preprocess import open_image
        for p in sys.argv[1:]:
            try:
                open_image(p)
            except ValueError as e:
                assert "not a regular file" in str(e), e
                print("refused")
    """
    o = run_bounded(code, timeout=20, max_rss_mb=900, args=[fifo, "/dev/zero"])
    assert o.ok and o.stdout.split() == ["refused", "refused"], describe(o)
