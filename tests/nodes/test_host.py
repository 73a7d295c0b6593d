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
    cpu = torch.device("cpu")
    assert h.devices("cpu") == (cpu, cpu)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    for choice in ("auto", "gpu"):
        load, offload = h.devices(choice)
        assert load.type == expected and offload == load  # nothing moves towers here
    with pytest.raises(ValueError, match="device='tpu'"):
        h.devices("tpu")


def test_hosts_declare_the_interface():
    """Both hosts implement every method of the declared interface (one name per concept)."""
    from clip_suite.nodes.hosting.interface import Host

    methods = {n for n in dir(Host) if not n.startswith("_") and callable(getattr(Host, n))}
    assert {"load", "prepare", "output", "clip_for", "chunk_cache", "embedding_library", "blocked", "derive",
            "storage_device", "resolve_model", "model_choices", "folder_files", "search_paths", "devices"} <= methods
    for cls in (host.StandaloneHost, host.ComfyHost):
        missing = [m for m in methods if not callable(getattr(cls, m, None))]
        assert not missing, f"{cls.__name__} lacks {missing}"
    assert isinstance(host.StandaloneHost(), Host)
    assert not hasattr(host, "embedding_library")  # the host's method is the one way to get the library


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
