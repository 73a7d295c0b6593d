"""Scorer and model files that claim more than they may hold, corrupt ``config.json`` files, tensors that are
not float weights, and scores that come out NaN (issue 26, points 4, 14 and 15).

Memory cases run in a child bounded at 400 MB (the interpreter with torch and clip_suite is about 260 MB), so
a reader that believes a file's claim fails the test instead of the machine.
"""

from __future__ import annotations

import json
import math
import re
import struct

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from helpers import tiny_models as tm
from helpers.bounded import HAS_PROC, describe, run_bounded
from helpers.hostile_files import (
    deflated_torch_zip, expanded_torch_zip, list_bomb_pickle, list_bomb_torch_zip, sparse_safetensors,
    sparse_torch_zip,
)
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401
from clip_suite.clip_impl.scoring.aesthetic import AestheticHead, aesthetic_scores, load_head
from clip_suite.clip_impl.weights.files import ModelFileError
from clip_suite.clip_impl.weights.loading import load_clip

bounded = pytest.mark.skipif(not HAS_PROC, reason="the time/RSS bounds read /proc (Linux)")

_REFUSALS = """
import json, sys
from clip_suite.clip_impl.scoring import load_head
from clip_suite.clip_impl.weights import load_clip
out = {}
for arg in sys.argv[1:]:
    how, path = arg.split("=", 1)
    try:
        (load_head if how == "head" else load_clip)(path)
        out[arg] = "loaded"
    except ValueError as e:
        out[arg] = str(e)
print(json.dumps(out))
"""


def _refusals(paths: dict) -> dict:
    """Load each file in one bounded child: {name: the error message (or "loaded")}."""
    args = [f"{how}={path}" for how, path in paths.values()]
    o = run_bounded(_REFUSALS, timeout=60, max_rss_mb=400, args=args)
    assert o.ok, describe(o)
    got = json.loads(o.stdout)
    return {name: got[f"{how}={path}"] for name, (how, path) in paths.items()}


# ------------------------------------------------------------------------------------------------ 4
@bounded
def test_head_files_claiming_hundreds_of_mb_are_refused_before_reading(tmp_path):
    """A 256 KB .pth with a deflated 256 MiB tensor, a one-float storage viewed as 64 M floats, sparse
    .safetensors heads (256 MiB apparent; 32 MiB with a tensor 8 M wide; 16 MiB of 8 M values), a 12 MB
    data.pkl of 6 M empty lists, the same as a plain pickle (before: 0.7 GB and 18 s): each refused naming the file, the
    entry or tensor and the limit, in bounded memory. Before: 0.97 GB, 0.72 GB and 0.97 GB peaks."""
    paths = {
        "deflated": ("head", deflated_torch_zip(tmp_path / "deflated.pth", 64 * 2**20)),
        "expanded": ("head", expanded_torch_zip(tmp_path / "expanded.pth", (1, 64 * 2**20))),
        "sparse": ("head", sparse_safetensors(tmp_path / "sparse.safetensors", {"weight": ("F32", (1, 64 * 2**20))},
                                              {"bias": torch.zeros(1)})),
        "wide": ("head", sparse_safetensors(tmp_path / "wide.safetensors", {"weight": ("F32", (1, 8 * 2**20))},
                                            {"bias": torch.zeros(1)})),
        "many": ("head", sparse_safetensors(tmp_path / "many.safetensors",
                                            {f"layers.{i}.weight": ("F16", (4096, 1024)) for i in range(2)})),
        "pickle": ("head", list_bomb_torch_zip(tmp_path / "lists.pth", 6_000_000)),
        "plain pickle": ("head", list_bomb_pickle(tmp_path / "plain.pth", 6_000_000)),
    }
    got = _refusals(paths)
    assert "deflated.pth: entry 'archive/data/0' unpacks to 256.0 MiB" in got["deflated"]
    assert "aesthetic head may hold (64.0 MiB)" in got["deflated"]
    assert "expanded.pth: tensor 'weight' is F32 [1, 67108864]" in got["expanded"] and "4096 wide" in got["expanded"]
    assert "sparse.safetensors is 256.0 MiB; an aesthetic head is at most 64.0 MiB" in got["sparse"]
    assert "wide.safetensors: tensor 'weight' is F32 [1, 8388608]" in got["wide"]
    assert "many.safetensors: tensor 'layers.1.weight'" in got["many"] and "at most 4194304" in got["many"]
    assert "lists.pth: entry 'archive/data.pkl' is 11.4 MiB; the pickle of an aesthetic head (names and shapes) " \
           "is at most 1.0 MiB" in got["pickle"]
    assert "plain.pth: its pickle (names and shapes) runs past 1.0 MiB" in got["plain pickle"]


@bounded
def test_model_files_claiming_more_than_their_layout_are_refused_before_reading(tmp_path, l_model):
    """Through --model (load_clip): the deflated .pth; a clip_l whose token table claims 40x its rows (a
    hole of 1 GB), as .safetensors and as a torch.save zip (mapped, not read: before, torch.load read it
    all, 1.5 GB at 20x); a header whose layer index says a billion layers; a 12 MB pickle of 6 M empty lists;
    a 12 MB header of 4 M empty lists (a list object each when parsed). Refused before any data is read."""
    good = tm.hf_state(l_model)
    table = "text_model.embeddings.token_embedding.weight"
    rest = {k: v for k, v in good.items() if k != table}
    bomb = dict(good)
    bomb["text_model.encoder.layers.999999999.mlp.fc1.bias"] = torch.zeros(4)
    save_file(bomb, str(tmp_path / "deep.safetensors"))
    paths = {
        "deflated": ("model", deflated_torch_zip(tmp_path / "deflated.pth", 64 * 2**20)),
        "table": ("model", sparse_safetensors(tmp_path / "table.safetensors", {table: ("F32", (49408 * 40, 128))}, rest)),
        "deep": ("model", tmp_path / "deep.safetensors"),
        "pickled table": ("model", sparse_torch_zip(tmp_path / "table.pt", {table: (49408 * 40, 128)}, rest)),
        "plain pickle": ("model", list_bomb_pickle(tmp_path / "plain.ckpt", 6_000_000)),
        "values": ("model", _raw_safetensors(tmp_path / "values.safetensors", b'{"__metadata__":[' + b"[]," * 4_000_000 + b"[]]}")),
    }
    got = _refusals(paths)
    assert "deflated.pth: entry 'archive/data/0' unpacks to 256.0 MiB, more than a model file" in got["deflated"]
    for name, file in (("table", "table.safetensors"), ("pickled table", "table.pt")):
        assert f"{file}: the CLIP-L text encoder needs text_model.embeddings.token_embedding.weight of shape " \
               "[49408, 128] but the file says [1976320, 128]" in got[name]
    assert "deep.safetensors: the CLIP-L text encoder would have layers 1000000000" in got["deep"]
    assert "plain.ckpt: its pickle (names and shapes) runs past 4.0 MiB" in got["plain pickle"]
    assert "values.safetensors is not a valid .safetensors file (its header lists about 8000003 values; a model " \
           "file has at most 1000000)" in got["values"]


def _raw_safetensors(path, header: bytes):
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


def test_a_real_head_still_loads_from_both_formats(tmp_path):
    torch.manual_seed(3)
    mlp = nn.Sequential(nn.Linear(768, 1024), nn.Dropout(), nn.Linear(1024, 128), nn.Dropout(), nn.Linear(128, 64),
                        nn.Dropout(), nn.Linear(64, 16), nn.Linear(16, 1))
    sd = {f"layers.{k}": v for k, v in mlp.state_dict().items()}
    torch.save(sd, tmp_path / "v2.pth")
    save_file(sd, str(tmp_path / "v2.safetensors"))
    for name in ("v2.pth", "v2.safetensors"):
        head = load_head(tmp_path / name)
        assert head.describe().startswith("v2 MLP 768-1024-128-64-16-1")


# ----------------------------------------------------------------------------------------------- 14
def _pth(path, weight, bias=None):
    torch.save({"weight": weight, "bias": torch.zeros(1) if bias is None else bias}, path)
    return path


@pytest.mark.parametrize("make, dtype", [
    (lambda: torch.zeros(1, 64).to(torch.float8_e4m3fn), "F8_E4M3 (float8)"),
    (lambda: torch.zeros(1, 64).to_sparse(), "a sparse_coo tensor"),
    (lambda: torch.empty(1, 64, device="meta"), "a meta tensor"),
    (lambda: torch.zeros(1, 64, dtype=torch.complex64), "complex64"),
    (lambda: torch.zeros(1, 64, dtype=torch.int64), "int64"),
    (lambda: torch.zeros(1, 64, dtype=torch.bool), "bool"),
])
def test_heads_that_are_not_float_weights_name_the_file_key_and_dtype(tmp_path, make, dtype):
    with pytest.raises(ModelFileError, match=re.escape(f"head.pth: tensor 'weight' is {dtype}")):
        load_head(_pth(tmp_path / "head.pth", make()))


@pytest.mark.parametrize("dtype", ["F8_E4M3", "I64", "BOOL"])
def test_safetensors_heads_with_other_dtypes_are_refused_from_the_header(tmp_path, dtype):
    path = sparse_safetensors(tmp_path / "head.safetensors", {"weight": (dtype, (1, 64))}, {"bias": torch.zeros(1)})
    with pytest.raises(ModelFileError, match=rf"head.safetensors: tensor 'weight' is {dtype}"):
        load_head(path)


def test_model_tensors_that_are_not_floats_are_refused_naming_the_key(tmp_path, l_model):
    sd = tm.hf_state(l_model)
    key = "text_model.encoder.layers.1.mlp.fc1.weight"
    sd[key] = sd[key].to(torch.int32)
    save_file(sd, str(tmp_path / "int.safetensors"))
    with pytest.raises(ModelFileError, match=rf"int.safetensors: tensor '{key}' is I32, not floating-point"):
        load_clip(tmp_path / "int.safetensors")


_DEEP = "[" * 100_000 + "]" * 100_000
_CONFIGS = {
    "a list": ("[1, 2]", r"holds a JSON list, not an object"),
    "a number": ("5", r"holds a JSON int, not an object"),
    "deep nesting": (_DEEP, r"nests deeper than 32 levels"),
    "Infinity heads": ('{"num_attention_heads": Infinity}', r"not valid JSON \(Infinity is not a JSON number\)"),
    "1e400 heads": ('{"num_attention_heads": 1e400}', r"not valid JSON \(1e400 is too large a number\)"),
    "negative heads": ('{"vision_config": {"num_attention_heads": -2}}', r"num_attention_heads is -2; it must be a whole"),
    "fractional mlp": ('{"text_config": {"intermediate_size": 512.5}}', r"intermediate_size is 512.5"),
    "section a list": ('{"text_config": [1]}', r"text_config is a list, not an object"),
    "act a number": ('{"hidden_act": 3}', r"hidden_act is 3, not a name"),
    "heads not dividing": ('{"num_attention_heads": 5}', r"cannot be built: .*5 heads.*num_attention_heads 5 is from .*config.json"),
    "too big": (" " * (5 * 2**20) + "{}", r"a config.json is a few KB"),
}


@pytest.mark.parametrize("case", list(_CONFIGS))
def test_corrupt_config_json_is_a_clear_error_naming_it(tmp_path, l_model, v_model, case):  # noqa: F811
    folder = tm.write_hf_clip_folder(tmp_path / "clip", l_model, v_model)
    text, message = _CONFIGS[case]
    (folder / "config.json").write_text(text)
    with pytest.raises(ModelFileError, match=message) as e:
        load_clip(folder)
    assert "config.json" in str(e.value) and "\n" not in str(e.value)


def test_logit_scale_past_what_exp_can_take_is_refused(tmp_path, l_model, v_model):  # noqa: F811
    model = load_clip(tm.write_hf_clip(tmp_path / "hot.safetensors", l_model, v_model, logit_scale=1000.0))
    with pytest.raises(ModelFileError, match=r"hot.safetensors: logit_scale is 1000.0; CLIP's is at most ln\(100\)"):
        model.logit_scale  # noqa: B018


# ----------------------------------------------------------------------------------------------- 15
def overflowing_head(width: int, source: str = "overflow.pth") -> AestheticHead:
    """A v2-shaped head with finite weights whose products overflow float32 on any embedding: 3e38 x, then
    1e30 times each coordinate summed (inf and -inf meet: NaN)."""
    return AestheticHead(
        "v2 MLP", (torch.eye(width) * 3e38, torch.full((1, width), 1e30)), (torch.zeros(width), torch.zeros(1)), source
    )


def test_overflowing_head_scores_are_reported_not_finite_and_left_out(vision_dir):  # noqa: F811
    model = load_clip(vision_dir / "clip_hf.safetensors")
    images = torch.rand(3, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    result = aesthetic_scores(model, overflowing_head(64), images)
    assert all(math.isnan(s) for s in result.scores)
    assert sorted(result.invalid) == [0, 1, 2]
    assert "aesthetic score is not finite (nan): the aesthetic head overflow.pth overflowed float32" in result.invalid[0]
    assert "3 images: no finite score" in result.report and "#1: aesthetic score is not finite" in result.report
