"""Converter CLI under hostile input (issue 10): every user error is one line naming the file or
option and what to do, exit status 2, nothing written, no traceback unless ``--debug``."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from medvr_verl.data.cli import main
from medvr_verl.data.readers import SourceFileError
from medvr_verl.data.records import SKIP_EMPTY_IMAGE, ImageRef, Record
from medvr_verl.data.writer import check_output_path, write_records
from medvr_verl.tools.image_io import EmptyImageError, check_pixel_budget, load_medical_image

REPO_ROOT = Path(__file__).resolve().parent.parent


def _png(path: Path, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


def _medxpertqa(root: Path) -> Path:
    _png(root / "images" / "a.png")
    (root / "MM").mkdir(parents=True)
    entry = {"id": "MM-0", "question": "q?", "options": {"A": "x", "B": "y"}, "label": "A", "images": ["a.png"]}
    (root / "MM" / "test.jsonl").write_text(json.dumps(entry) + "\n", encoding="utf-8")
    return root


def _run(capsys, *args) -> tuple[int, str]:
    code = main([*map(str, args), "--no-progress"])
    err = capsys.readouterr().err
    return code, err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _nothing_written(folder: Path, before: set) -> None:
    assert set(os.listdir(folder)) == before, "the converter left files behind"


@pytest.fixture
def release(tmp_path):
    return _medxpertqa(tmp_path / "MedXpertQA")


def test_output_path_errors(tmp_path, release, capsys):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    before = set(os.listdir(tmp_path))
    cases = {
        tmp_path / "afile" / "x.parquet": "is a file, not a folder",
        tmp_path / "afile" / "deeper" / "x.parquet": "is a file, not a folder",
        tmp_path / "adir": "is a folder",
        "": "output path is empty",
        "   ": "output path is empty",
    }
    for out, message in cases.items():
        code, err = _run(capsys, "medxpertqa", release, out, "--split", "test")
        assert code == 2 and message in _one_line_error(err)
    _nothing_written(tmp_path, before)


def test_unwritable_system_path(release, capsys):
    for out in ("/proc/medvr_test.parquet", "/proc/nope/x.parquet", "/sys/medvr_test.parquet"):
        code, err = _run(capsys, "medxpertqa", release, out, "--split", "test")
        line = _one_line_error(err)
        assert code == 2 and "cannot write" in line and out in line
        assert not os.path.exists(out)


@pytest.mark.parametrize("kind", ["missing", "folder", "not_utf8", "empty"])
def test_system_prompt_file_errors(tmp_path, release, capsys, kind):
    path = {"missing": tmp_path / "nope.txt", "folder": tmp_path, "not_utf8": tmp_path / "bad.txt", "empty": ""}[kind]
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
    out = tmp_path / "out.parquet"
    code, err = _run(capsys, "medxpertqa", release, out, "--split", "test", "--system-prompt-file", path)
    line = _one_line_error(err)
    assert code == 2 and "--system-prompt-file" in line and not out.exists()


@pytest.mark.parametrize("value", ["0", "-5", "abc", "1.5", ""])
def test_invalid_max_image_pixels_is_reported_as_such(tmp_path, release, capsys, value):
    out = tmp_path / "out.parquet"
    code, err = _run(capsys, "medxpertqa", release, out, "--split", "test", "--max-image-pixels", value)
    line = _one_line_error(err)
    assert code == 2 and "--max-image-pixels" in line and "unreadable" not in line and not out.exists()


def test_bad_limit_is_one_line(tmp_path, release, capsys):
    code, err = _run(capsys, "medxpertqa", release, tmp_path / "o.parquet", "--split", "test", "--limit", "-1")
    assert code == 2 and "--limit" in _one_line_error(err)
    code, err = _run(capsys, "medxpertqa", release, tmp_path / "o.parquet")  # --split missing
    assert code == 2 and "--split" in _one_line_error(err)


def test_non_utf8_jsonl_names_the_file(tmp_path, release, capsys):
    (release / "MM" / "test.jsonl").write_bytes(b'{"id": "MM-0", "question": "caf\xe9"}\n')
    out = tmp_path / "new" / "deeper" / "out.parquet"
    code, err = _run(capsys, "medxpertqa", release, out, "--split", "test")
    line = _one_line_error(err)
    assert code == 2 and "test.jsonl" in line and "UTF-8" in line and not out.exists()
    assert not (tmp_path / "new").exists()  # the folders made for the output are gone again


def test_non_utf8_csv_names_the_file(tmp_path, capsys):
    root = tmp_path / "PMC-VQA"
    _png(root / "images" / "f.png")
    header = ["index", "Figure_path", "Caption", "Question", "Choice A", "Choice B", "Choice C", "Choice D"]
    header += ["Answer", "Answer_label"]
    buf = io.StringIO()
    csv.writer(buf).writerows([header, [0, "f.png", "c", "q?", "A:x", "B:y", "C:z", "D:w", "x", "A"]])
    latin_row = "1,f.png,caf\xe9,q?,A:x,B:y,C:z,D:w,x,A\n".encode("latin-1")
    files = (
        ("test.csv", buf.getvalue().encode("latin-1") + latin_row),
        ("train.csv", b"\xe9" + buf.getvalue().encode()),
    )
    for name, data in files:
        (root / name).write_bytes(data)
    for split, name in (("test", "test.csv"), ("train", "train.csv")):
        out = tmp_path / f"{split}.parquet"
        code, err = _run(capsys, "pmc_vqa", root, out, "--split", split)
        line = _one_line_error(err)
        assert code == 2 and name in line and "UTF-8" in line and not out.exists()


def test_corrupt_parquet_shard_names_the_file(tmp_path, capsys):
    root = tmp_path / "path-vqa" / "data"
    root.mkdir(parents=True)
    shard = root / "test-00000-of-00001.parquet"
    shard.write_bytes(b"PAR1 this is not a parquet file at all PAR1")
    out = tmp_path / "out.parquet"
    code, err = _run(capsys, "path_vqa", root.parent, out, "--split", "test")
    line = _one_line_error(err)
    assert code == 2 and str(shard) in line and not out.exists()


def test_layout_error_is_one_line(tmp_path, release, capsys):
    code, err = _run(capsys, "slake", release, tmp_path / "o.parquet", "--split", "test")
    line = _one_line_error(err)
    assert code == 2 and "missing file 'test.json'" in line and "Expected layout" in line
    code, err = _run(capsys, "no_such_dataset", release, tmp_path / "o.parquet", "--split", "test")
    assert code == 2 and "no_such_dataset" in _one_line_error(err)
    code, err = _run(capsys, "slake", tmp_path / "missing", tmp_path / "o.parquet", "--split", "test")
    assert code == 2 and "missing" in _one_line_error(err)


def test_debug_shows_the_traceback(tmp_path, release):
    with pytest.raises(ValueError, match="is a folder"):
        main(["medxpertqa", str(release), str(tmp_path), "--split", "test", "--no-progress", "--debug"])


def test_cli_subprocess_has_no_traceback(tmp_path, release):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    (tmp_path / "afile").write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "medvr_verl.data", "medxpertqa", str(release), str(tmp_path / "afile" / "o.parquet"),
         "--split", "test", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        f"error: cannot write {str(tmp_path / 'afile' / 'o.parquet')!r}: {str(tmp_path / 'afile')!r} is a file, "
        "not a folder; choose another output path"
    ]


def test_check_output_path_accepts_new_folders(tmp_path):
    target = tmp_path / "new" / "deeper" / "x.parquet"
    assert check_output_path(target) == str(target)
    assert not (tmp_path / "new").exists()  # nothing created by the check


# ------------------------------------------------------------------------------------------------
# Degenerate images: refused with a clear message, never "division by zero"
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(0, 10), (10, 0), (0, 0)])
def test_empty_images_are_refused_clearly(size):
    img = Image.new("L", size)
    with pytest.raises(EmptyImageError, match="empty"):
        load_medical_image(img)
    with pytest.raises(EmptyImageError, match="zero width or height"):
        check_pixel_budget(size)


def test_empty_images_are_skipped_by_the_converter(tmp_path):
    good = tmp_path / "g.png"
    _png(good)
    records = [
        Record("d", "test", str(i), "q?", "yes", "closed", [ImageRef(name="x", pil=Image.new("RGB", size))])
        for i, size in enumerate([(0, 10), (10, 0)])
    ]
    records.append(Record("d", "test", "2", "q?", "yes", "closed", [ImageRef.file(good)]))
    report = write_records(records, tmp_path / "o.parquet", progress=False)
    assert report.written == 1 and report.skip_reasons == {SKIP_EMPTY_IMAGE: 2}


def test_source_file_error_is_a_value_error():
    assert isinstance(SourceFileError("/x/y.csv", "broken"), ValueError)
    assert "/x/y.csv" in str(SourceFileError("/x/y.csv", "broken"))


_PARTS = ["afile", "adir", "new", "..", ".", "", " ", "x.parquet", "\u00e9", "a" * 300]


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_PARTS), max_size=4))
def test_check_output_path_fuzz(tmp_path, parts):
    """Any output path is accepted or refused with a one-line ValueError; nothing is created."""
    (tmp_path / "afile").write_text("x") if not (tmp_path / "afile").exists() else None
    (tmp_path / "adir").mkdir(exist_ok=True)
    before = set(os.listdir(tmp_path))
    path = os.path.join(str(tmp_path), *parts) if parts else ""
    try:
        check_output_path(path)
    except ValueError as exc:
        assert "\n" not in str(exc) and str(exc)
    assert set(os.listdir(tmp_path)) == before
