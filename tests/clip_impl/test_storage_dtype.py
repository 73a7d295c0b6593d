"""load_clip(storage_dtype=...): a host's choice of storage dtype, without changing the numbers."""

import torch

from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip


def test_storage_dtype_keeps_results_and_sharing(model_dir):
    path = model_dir / "sdxl.safetensors"
    default = load_clip(path)
    half = load_clip(path, storage_dtype=torch.float16)
    for role in ("l", "g"):
        tower = half.towers[role]
        assert tower.text_model.encoder.layers[0].mlp.fc1.weight.dtype == torch.float16
        assert tower.compute_dtype == torch.float32 and tower is not default.towers[role]
        assert load_clip(path, storage_dtype=torch.float16).towers[role] is tower  # shared per storage dtype
    settings = EncodeSettings(clip_skip=1, weighting="a1111")
    a = encode_prompt(default, "a (cat:1.3) in a garden", settings, cache=None)
    b = encode_prompt(half, "a (cat:1.3) in a garden", settings, cache=None)
    # auto rounds to fp16 first, so fp16 storage holds the very same values: fp32 compute gives equal results.
    assert torch.equal(a.cond, b.cond) and torch.equal(a.pooled, b.pooled)
