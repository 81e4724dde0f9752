"""A full disk mid-run: a clear error, no partial output under any final name, and a re-run that resumes.

The run directory lives on a real tmpfs mounted with a size limit below what the run writes (needs the
right to mount, as root in CI; skipped otherwise with the reason).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedcurate.common.data.loaders import write_samples
from fedcurate.simulations.synthetic import make_splits

SETTINGS = ["scoring.scorers=['length', 'random']", "selection.fraction=0.5", "data.on-error='skip'"]


def _select(data: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "fedcurate.app.cli", "select", "--input", str(data), "--out", str(out)]
    for s in SETTINGS:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _du(folder: Path) -> int:
    return sum(4096 * -(-p.stat().st_size // 4096) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()

    def mount(size: int) -> Path:
        opts = f"size={size}"
        args = ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)]
        if os.path.ismount(mnt):
            args = ["mount", "-o", f"remount,{opts}", str(mnt)]
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a size-limited tmpfs here ({done.stderr.strip()}); needs root")
        return mnt

    yield mount
    if os.path.ismount(mnt):
        subprocess.run(["umount", str(mnt)], check=False)


def _check_complete(run: Path) -> None:
    """No temporary file left, and every output under its final name reads back whole."""
    leftovers = [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    for p in run.rglob("*"):
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            [json.loads(line) for line in p.read_text().splitlines()]
        elif p.suffix == ".parquet":
            pq.read_table(p)
        elif p.suffix in (".npz", ".npy"):
            np.load(p)


def test_a_full_disk_stops_the_run_cleanly_and_a_rerun_resumes(tmp_path, small_disk):
    # Prepare: the same run once on the normal disk, for its size and its results
    splits = make_splits(num_samples=400, noise_rate=0.3, anchor_size=0, test_size=0, seed=2)
    data = tmp_path / "train.jsonl"
    write_samples(data, splits.train)
    ref = _select(data, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    size = _du(tmp_path / "ref")

    # Execute: a disk with room for about half of it
    disk = small_disk(size // 2)
    full = _select(data, disk / "run")

    # Assert: stopped with the reason, nothing half-written, the last phase not marked done
    assert full.returncode == 2, full.stderr[-2000:]
    assert "disk full" in full.stderr and "re-run the same command to resume" in full.stderr
    _check_complete(disk / "run")
    done = sorted(p.parent.name for p in (disk / "run" / "server").glob("*/DONE"))
    assert "select" not in done

    # Execute: more room, the same command again
    small_disk(size * 4)
    again = _select(data, disk / "run")

    # Assert: resumed to the end, the same selection as on the normal disk
    assert again.returncode == 0, again.stderr[-2000:]
    _check_complete(disk / "run")
    got = pq.read_table(disk / "run" / "scores.parquet").to_pydict()
    want = pq.read_table(tmp_path / "ref" / "scores.parquet").to_pydict()
    assert got["id"] == want["id"] and got["selected"] == want["selected"]
