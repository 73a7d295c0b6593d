"""Images for the vision tower: CLIP's preprocessing (resize, centre crop, normalise) and letterboxing,
bounded decoding of image files with a worker-pool loader, and prompts read back from PNG/JPEG/WebP metadata
(ComfyUI's graph or A1111's parameters).
"""

from .letterbox import FITS, Fit, letterbox_images
from .loader import ImageLoader, LoadedImage, default_workers, load_images
from .metadata import FoundPrompt, a1111_parameters, prompt_from_image
from .preprocess import IMAGE_SUFFIXES, image_to_tensor, load_image_file, preprocess_images

__all__ = [
    "FITS", "Fit", "letterbox_images", "ImageLoader", "LoadedImage", "default_workers", "load_images",
    "FoundPrompt",
    "a1111_parameters", "prompt_from_image", "IMAGE_SUFFIXES", "image_to_tensor", "load_image_file",
    "preprocess_images",
]
