"""ComfyUI node classes (thin adapters over ``clip_impl``); ``host.py`` is the only ComfyUI-facing module."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
