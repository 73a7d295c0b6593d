"""A corpus of broken and hostile model files, each refused with a message naming the file and the
problem, through the loader node and through the CLI (exit code 2, one line), never a traceback."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from helpers import tiny_models as tm
from clip_suite.cli import main
from clip_suite.clip_impl.weights.files import ModelFileError
from clip_suite.nodes.loader import ClipSuiteLoader
from helpers.vision_fixtures import vh_model  # noqa: F401  (fixture)
from helpers.shared_helpers import pinned_host


class _Evil:
    """Unpickling this would create a file (the side effect that must never happen)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, l_model, g_model, vh_model):
    """folder/name -> (a regex the message must match). Files live in a ComfyUI-style models folder."""
    root = tmp_path_factory.mktemp("bad_models")
    ck, te, cv = (root / f for f in ("checkpoints", "text_encoders", "clip_vision"))
    for d in (ck, te, cv):
        d.mkdir()
    good = {k: v.half() for k, v in tm.hf_state(l_model).items()}
    cases = {}
    data = tm.save(te / "whole.safetensors", good).read_bytes()
    (te / "truncated.safetensors").write_bytes(data[: len(data) // 3])
    cases["text_encoders/truncated.safetensors"] = r"truncated.safetensors is truncated"
    (te / "lying_dtype.safetensors").write_bytes(data.replace(b'"F16"', b'"F32"', 1))
    cases["text_encoders/lying_dtype.safetensors"] = r"lying_dtype.safetensors: the header says tensor .* bytes"
    (te / "lying_size.safetensors").write_bytes(data.replace(b'"shape":[128]', b'"shape":[256]', 1))
    cases["text_encoders/lying_size.safetensors"] = r"lying_size.safetensors: the header says tensor"
    save_file({k: torch.full_like(v, float("nan")) for k, v in good.items()}, str(te / "nan.safetensors"))
    cases["text_encoders/nan.safetensors"] = r"nan.safetensors: tensor .* NaN"
    save_file(tm.hf_state(l_model, "conditioner.embedders.0.transformer.", projection=False), str(ck / "sdxl_no_g.safetensors"))
    cases["checkpoints/sdxl_no_g.safetensors"] = r"sdxl_no_g.safetensors is an SDXL checkpoint .* CLIP-G .* missing"
    (ck / "readme.safetensors").write_text("This is a text file renamed .safetensors, not a model.\n" * 20)
    cases["checkpoints/readme.safetensors"] = r"readme.safetensors is not a valid .safetensors file"
    (ck / "empty.safetensors").write_bytes(b"")
    cases["checkpoints/empty.safetensors"] = r"empty.safetensors is empty"
    marker = root / "code_ran"
    with open(ck / "evil.ckpt", "wb") as f:
        pickle.dump({"state_dict": {"x": _Evil(marker)}}, f)
    cases["checkpoints/evil.ckpt"] = r"evil.ckpt contains objects other than weights"
    save_file({"model.diffusion_model.out.2.bias": torch.zeros(4)}, str(ck / "unet_only.safetensors"))
    cases["checkpoints/unet_only.safetensors"] = r"unet_only.safetensors: no CLIP text encoder found"
    tm.write_sd1_checkpoint(ck / "sd15.safetensors", l_model)
    tm.write_sd1_checkpoint(ck / "sd15_copy.safetensors", l_model)
    cases["checkpoints/sd15.safetensors+checkpoints/sd15_copy.safetensors"] = r"both hold a CLIP-L"
    tm.save(te / "clip_g.safetensors", tm.hf_state(g_model))
    tm.write_clip_vision(cv / "clip_vision_h.safetensors", vh_model)
    cases["text_encoders/clip_g.safetensors+clip_vision/clip_vision_h.safetensors"] = r"clip_vision_h.safetensors.*clip_g.safetensors|clip_g.safetensors.*clip_vision_h.safetensors"
    return root, cases, marker


def _paths(root, case):
    return [root / part for part in case.split("+")]


def test_cli_refuses_each_file(corpus, capsys, tmp_path):
    root, cases, marker = corpus
    for case, pattern in cases.items():
        files = _paths(root, case)
        argv = ["encode", "--model", str(files[0]), "--prompt", "x", "--out", str(tmp_path / "o.safetensors")]
        if len(files) > 1:
            argv += ["--model-2", str(files[1])]
        assert main(argv) == 2, case
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, f"{case}: {err}"
        assert __import__("re").search(pattern, err), f"{case}: {err}"
    assert not marker.exists(), "unpickling ran code from evil.ckpt"


def test_loader_node_refuses_each_file(corpus):
    root, cases, marker = corpus
    with pinned_host(root):
        for case, pattern in cases.items():
            parts = case.split("+")
            with pytest.raises(ModelFileError, match=pattern):
                ClipSuiteLoader().load(parts[0], parts[1] if len(parts) > 1 else "none", "auto", "auto", "cpu")
    assert not marker.exists()
