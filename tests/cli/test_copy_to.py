"""``score --copy-to`` writes complete copies or none, and never outside the real target folder (issue 26,
points 11 and 12): a full disk (a file-size limit in a bounded child) leaves no partial copy under a real
name and a rerun adds no ``_1``; symbolic links inside the target, dangling or to a folder or a file
outside, are never followed; temporary files of killed runs are cleaned up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_suite.cli import main
from clip_suite.cli.copy_images import copy_files
from helpers.bounded import HAS_PROC, describe, run_bounded
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symbolic links and resource limits (POSIX)")


@pytest.fixture()
def source(tmp_path):
    """Three 12 KB PNGs, one in a subfolder."""
    d = tmp_path / "src"
    (d / "sub").mkdir(parents=True)
    for i, where in enumerate(["", "", "sub"]):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            d / where / f"img_{i}.png")
    return d


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _images(source: Path) -> list[str]:
    return sorted(str(p) for p in source.rglob("*.png"))


@pytest.mark.skipif(not HAS_PROC, reason="bounded children read /proc (Linux)")
def test_a_full_disk_leaves_no_partial_copy_and_a_rerun_no_suffix(source, tmp_path):
    target = tmp_path / "picked"
    code = """
        import resource, signal, sys
        from clip_suite.cli.copy_images import copy_files
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails (EFBIG) like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (5000, resource.RLIM_INFINITY))
        try:
            copy_files(sys.argv[3:], [sys.argv[1]], sys.argv[2])
        except (ValueError, OSError) as e:
            print(f"{type(e).__name__}: {e}")
    """
    for _ in range(2):  # a rerun onto the still-full disk adds nothing either
        o = run_bounded(code, timeout=30, max_rss_mb=500, args=[source, target, *_images(source)])
        assert o.returncode == 0 and o.stdout.startswith("ValueError: --copy-to: cannot copy "), describe(o)
        assert "nothing partial was left" in o.stdout
        assert not [p for p in target.rglob("*") if p.is_file()], "no partial copy, no temporary file"
    result = copy_files(_images(source), [str(source)], str(target))
    assert (result.copied, result.already_there) == (3, 0) and _files(target) == _files(source)
    again = copy_files(_images(source), [str(source)], str(target))
    assert (again.copied, again.already_there) == (0, 3) and _files(target) == _files(source), "no _1 on a rerun"


def test_symbolic_links_in_the_target_are_never_followed(source, tmp_path, capsys):
    target, outside = tmp_path / "picked", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    (outside / "same.png").write_bytes((source / "img_1.png").read_bytes())
    (target / "img_0.png").symlink_to(outside / "evil.png")  # dangling
    (target / "img_1.png").symlink_to(outside / "same.png")  # to a file with the same bytes
    (target / "sub").symlink_to(outside)  # a folder
    before = _files(outside)
    for run in range(2):
        result = copy_files(_images(source), [str(source)], str(target))
        assert _files(outside) == before, "nothing written outside the target"
        assert (result.copied, result.already_there, result.skipped) == ((2, 0, 1) if run == 0 else (0, 2, 1))
        err = capsys.readouterr().err
        assert f"{target / 'img_0.png'} is a symbolic link: not followed" in err
        assert f"{target / 'sub'} is a symbolic link inside the target; it is not followed" in err
        assert "1 of 3 images not copied" in err
    assert (target / "img_0_1.png").read_bytes() == (source / "img_0.png").read_bytes()
    assert (target / "img_1_1.png").read_bytes() == (source / "img_1.png").read_bytes()
    assert sorted(p.name for p in target.iterdir()) == ["img_0.png", "img_0_1.png", "img_1.png", "img_1_1.png", "sub"]


def test_score_copy_to_a_target_with_links(vision_dir, source, tmp_path, capsys):
    target, outside = tmp_path / "picked", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    (target / "sub").symlink_to(outside)
    (target / "img_0.png").symlink_to(outside / "evil.png")
    code = main(["score", "--model", str(vision_dir / "clip_hf.safetensors"), "--prompt", "a fox", "--copy-to",
                 str(target), "--out", "-", str(source)])
    err = capsys.readouterr().err
    assert code == 0 and "3 passed, copied 2 to" in err and "1 of 3 images not copied" in err
    assert not list(outside.iterdir()), "nothing written through the links"


def test_other_kinds_of_file_at_a_name_are_left_alone(source, tmp_path):
    target = tmp_path / "picked"
    target.mkdir()
    os.mkfifo(target / "img_0.png")  # opening it would wait forever
    (target / "img_1.png").mkdir()
    result = copy_files(_images(source)[:2], [str(source)], str(target))
    assert result.copied == 2 and (target / "img_0_1.png").is_file() and (target / "img_1_1.png").is_file()


def test_temporary_files_of_killed_runs_are_removed(source, tmp_path):
    target = tmp_path / "picked"
    target.mkdir()
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    stale = target / f".clip_suite_copy.{done.pid}.0.tmp"  # its writer is gone
    stale.write_bytes(b"half a copy")
    alive = target / f".clip_suite_copy.{os.getppid()}.0.tmp"  # a writer still running: not ours to remove
    alive.write_bytes(b"being written")
    copy_files(_images(source)[:1], [str(source)], str(target))
    assert not stale.exists() and alive.exists()
