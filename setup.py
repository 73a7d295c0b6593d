"""Packaging: the repository root is the package ``clip_suite`` (ComfyUI imports the folder itself), so every
sub-package is found here and installed under that name; the metadata is in pyproject.toml."""

from setuptools import find_packages, setup

SUBPACKAGES = find_packages(where=".", include=["clip_impl*", "cli*", "nodes*"])

setup(
    package_dir={"clip_suite": "."},
    packages=["clip_suite", *(f"clip_suite.{name}" for name in SUBPACKAGES)],
)
