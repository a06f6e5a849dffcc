"""Atomic exports by suffix, read back by pandas; bad paths fail before any work."""

import json
import os

import pandas as pd
import pytest

import funnelbench as fb
from funnelbench.env import resolve_device, resolve_dtype
from funnelbench.exports import atomic_write, check_export_path, export_records

RECORDS = [
    {"layout": "B12(197)", "params": 86567656, "macs": 17563594752, "error": None},
    {"layout": "B6(197)-6(99)", "params": 86567656, "macs": 13265200128, "error": "oom"},
]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".md", ".tex"])
def test_export_round_trip(tmp_path, suffix):
    path = export_records(RECORDS, tmp_path / "sub" / f"t{suffix}")
    text = path.read_text()
    if suffix == ".csv":
        frame = pd.read_csv(path)
        assert frame["macs"].tolist() == [17563594752, 13265200128]
        assert frame["layout"].tolist() == ["B12(197)", "B6(197)-6(99)"]
    elif suffix == ".json":
        assert json.loads(text) == RECORDS
    elif suffix == ".md":
        assert "| layout" in text and "B6(197)-6(99)" in text
    else:
        assert "\\begin{tabular}" in text
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_unknown_suffix_and_unwritable_path(tmp_path):
    with pytest.raises(fb.UsageError, match="unknown suffix '.xlsx'"):
        check_export_path(tmp_path / "t.xlsx")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(fb.UsageError, match="is a file, not a folder"):
        check_export_path(tmp_path / "afile" / "t.csv")
    with pytest.raises(fb.UsageError, match="is a file, not a folder"):
        export_records(RECORDS, tmp_path / "afile" / "deeper" / "t.md")
    # A folder where no one can create a file, root included (CI runs as root, for whom
    # permission bits do not bind): /proc. Nothing is written there, nor anywhere else.
    for target in ("/proc/t.csv", "/proc/sub/t.md"):
        with pytest.raises(fb.UsageError, match="not writable"):
            check_export_path(target)
        with pytest.raises(fb.UsageError, match="not writable"):
            export_records(RECORDS, target)
    assert not os.path.exists("/proc/t.csv")


def test_atomic_write_failure_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "t.csv"
    path.write_text("old")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(RuntimeError):
        atomic_write(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_device_and_dtype_errors():
    assert resolve_device("cpu").type == "cpu"
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(fb.UsageError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(fb.UsageError):
        resolve_device("tpu")
    with pytest.raises(fb.UsageError, match="fp32, bf16, fp16"):
        resolve_dtype("fp64")
