"""The standalone host and the host-independent parts of nodes/host.py."""

import sys

import pytest
import torch

from clip_suite.clip_impl.cache import ByteLRUCache
from clip_suite.nodes import host


def test_standalone_is_chosen_without_comfyui(monkeypatch):
    # The integration tests may have imported ComfyUI into this process: hide it, as CI never has it.
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    previous = host.set_host(None)
    try:
        assert not host.in_comfyui() and isinstance(host.get_host(), host.StandaloneHost)
    finally:
        host.set_host(previous)


def test_standalone_without_models_dir(monkeypatch):
    monkeypatch.delenv("CLIP_SUITE_MODELS", raising=False)
    h = host.StandaloneHost()
    assert h.model_choices() == []
    with pytest.raises(ValueError, match="no folder configured"):
        h.resolve_model("checkpoints/x.safetensors")


def test_standalone_devices():
    h = host.StandaloneHost()
    assert h.device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert h.device("auto").type == expected and h.device("gpu").type == expected
    with pytest.raises(ValueError, match="device='tpu'"):
        h.device("tpu")


def test_native_clip_needs_comfyui(standalone):
    class FakeClip:
        cond_stage_model = patcher = None

    with pytest.raises(TypeError, match="only be used inside ComfyUI"):
        standalone.clip_for(FakeClip())


def test_device_cache_keeps_tensors_on_the_cpu():
    base = ByteLRUCache(1 << 20)
    view = host.DeviceCache(base, torch.device("meta"))
    hidden, pooled = torch.ones(77, 8), torch.ones(8)
    view.put("k", (hidden.to(torch.float64), None))  # stored as given on the CPU (the host's dtype is kept)
    assert base.get("k")[0].device.type == "cpu" and base.get("k")[1] is None
    view.put("k2", (hidden, pooled))
    got = view.get("k2")
    assert got[0].device.type == "meta" and got[1].device.type == "meta"
    assert view.get("missing") is None
