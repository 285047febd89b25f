"""medvr_verl.io_utils: atomic writes that end with the user's umask, and the progress helper; and every
file kind the package writes (parquet, PNG, JSON / markdown / JSONL reports) honours the umask."""

from __future__ import annotations

import os
import stat

import pytest
from PIL import Image

from medvr_verl.io_utils import AtomicFile, atomic_write_text, progress


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o002, 0o077, 0o222])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_atomic_write_text_mode_is_umask(tmp_path, umask):
    path = atomic_write_text(tmp_path / "sub" / "a.md", "x\n")
    assert path.read_text() == "x\n" and os.listdir(path.parent) == ["a.md"]
    assert mode(path) == 0o666 & ~umask
    if umask & 0o200 == 0:
        atomic_write_text(path, "y\n")  # replaces
        assert path.read_text() == "y\n" and mode(path) == 0o666 & ~umask
        assert os.listdir(path.parent) == ["a.md"]


def test_atomic_file_reopened_by_path_and_failure_leaves_nothing(tmp_path, umask):
    target = AtomicFile(tmp_path / "data.bin")
    with target as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".data.bin.")
        with open(tmp, "wb") as fh:  # writers such as pyarrow or Pillow reopen the path
            fh.write(b"abc")
    assert (tmp_path / "data.bin").read_bytes() == b"abc" and mode(tmp_path / "data.bin") == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        with AtomicFile(tmp_path / "other.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["data.bin"]


def test_no_process_wide_umask_change(tmp_path, monkeypatch):
    # the mode comes from the kernel when the temporary file is created: os.umask (process-wide, racy
    # with the training-time drawing thread) is never called
    def refuse(_mask):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", refuse)
    assert atomic_write_text(tmp_path / "a.txt", "x").read_text() == "x"


def test_parquet_png_and_reports_honour_umask(tmp_path):
    import pyarrow.parquet as pq

    from medvr_verl.data.records import ConversionReport, ImageRef, Record
    from medvr_verl.data.writer import write_records
    from medvr_verl.eval.report import JsonlWriter, write_results
    from medvr_verl.viz import save_png

    img = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(img)
    old = os.umask(0o027)
    try:
        record = Record(
            dataset="t",
            split="train",
            source_id="q1",
            question="Is there a lesion?",
            answer="yes",
            question_type="closed",
            images=[ImageRef.file(img)],
        )
        out = tmp_path / "data" / "train.parquet"
        write_records([record], out, report=ConversionReport(dataset="t", split="train"), progress=False)
        png = save_png(Image.new("RGB", (4, 4)), tmp_path / "viz" / "x.png")
        paths = write_results(tmp_path / "results", {"a": 1}, "# md\n")
        with JsonlWriter(tmp_path / "results" / "samples.jsonl") as w:
            w.write({"a": 1})
    finally:
        os.umask(old)
    files = [out, png, paths["results.json"], paths["results.md"], tmp_path / "results" / "samples.jsonl"]
    assert {str(p): oct(mode(p)) for p in files} == {str(p): oct(0o640) for p in files}
    assert pq.read_table(out).num_rows == 1
    assert sorted(os.listdir(out.parent)) == ["train.parquet"]


def test_progress_enabled_and_disabled(capsys):
    assert list(progress(range(3), enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    assert list(progress(range(3), desc="demo", unit="row")) == [0, 1, 2]
    assert "demo" in capsys.readouterr().err
    with progress(total=2, enabled=False) as bar:  # by hand, as the eval loop counts batches
        bar.update(2)


@pytest.mark.parametrize("module", ["medvr_verl.io_utils", "medvr_verl.viz"])
def test_pure_modules_import_neither_veRL_nor_torch(module):
    import subprocess
    import sys

    code = f"import sys, {module}; print('verl' in sys.modules or 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
