"""Killing a build halfway and rerunning it gives the catalog an uninterrupted build gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from catalog_builder.build import BuildOptions, build
from catalog_builder.sources import open_source
from catalog_builder.store import LocalStore


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_killed_build_resumes_to_the_same_catalog(synthetic_raw: tuple[Path, Path], synthetic_catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "catalog_builder.cli", "build", "--s2", str(synthetic_raw[0]), "--s1", str(synthetic_raw[1]),
           "--out", str(out), "--scheduler", "synchronous", "--batch-size", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("bigearthnet-s1/*/*/*.json"))) < 8:
            assert proc.poll() is None, "the build finished before it could be interrupted"
            assert time.monotonic() < deadline, "the build made no progress"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "catalog.json").exists(), "the root must not exist before the build completes"
    partial = len(list(out.glob("bigearthnet-s2/*/*/*.json")))
    assert 8 <= partial < 40

    report = build(open_source(str(synthetic_raw[0]), str(synthetic_raw[1])), LocalStore(out), BuildOptions(scheduler="synchronous"))
    assert report.ok, report.describe()
    assert report.skipped >= 8 and report.built + report.skipped == 40
    # no temporary files are left behind, and every byte equals the uninterrupted build
    assert not list(out.rglob("*.part"))
    assert _tree(out) == _tree(synthetic_catalog)
