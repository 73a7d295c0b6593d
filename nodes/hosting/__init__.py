"""What ``nodes/host.py`` (the one module that imports ComfyUI) builds on, all testable without ComfyUI.

- ``interface.py``: the :class:`~.interface.Host` protocol (every method the nodes call) and
  :class:`~.interface.HostedClip`, the value that travels between our nodes.
- ``folders.py``: what both hosts share (model folders, embeddings, the chunk cache view, derived models).
- ``standalone.py``: the host for CI and scripts (no ComfyUI).
- ``native_text.py``: ComfyUI's own text encoders driven through our tower interface (no second copy).
- ``tokens_route.py``: the web extension's tokenizer route (request parsing and the aiohttp handler).
"""
