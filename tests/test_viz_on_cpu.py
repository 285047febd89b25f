"""Tests for medvr_verl.viz: the CCA group overlay, its helpers, and the rollout-dump CLI."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvr_verl.composite import MemberOutcome, group_rewards
from medvr_verl.viz import (
    BACKGROUND,
    CONSENSUS_ALPHA,
    CONSENSUS_COLOR,
    MemberView,
    TrajectoryView,
    group_overlays,
    main,
    members_from_records,
    overlay_filename,
    parse_image_boxes,
    render_group_overlay,
    render_rollouts,
    save_png,
    trajectory_color,
    write_step_overlays,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
GRAY = 128


def gray_image(w: int, h: int, value: int = GRAY) -> Image.Image:
    return Image.new("RGB", (w, h), (value, value, value))


def blended(value: int) -> tuple[int, ...]:
    a = round(CONSENSUS_ALPHA * 255)
    return tuple((value * (255 - a) + c * a + 127) // 255 for c in CONSENSUS_COLOR)


def px(img: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(img.getpixel((x, y)))


# --------------------------------------------------------------------------------------------------
# render_group_overlay
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def overlay() -> Image.Image:
    trajs = [
        TrajectoryView([(90, 90, 210, 210)], correct=True, reward=2.5, tool_reward=1.0, iou=0.69, label="#1"),
        TrajectoryView([(20, 200, 120, 280)], correct=False, reward=0.5, tool_reward=0.0, iou=None, label="#2"),
    ]
    return render_group_overlay(gray_image(400, 300), trajs, [(100, 100, 200, 200)])


def test_overlay_size_and_untouched_pixels(overlay):
    w, h = overlay.size
    assert overlay.mode == "RGB"
    assert w > 400 and h >= 300  # image (kept at 400x300) plus a legend panel on the right
    assert px(overlay, 300, 50) == (GRAY,) * 3  # away from every box
    assert px(overlay, 399, 299) == (GRAY,) * 3


def test_consensus_is_tinted_with_outline(overlay):
    assert px(overlay, 150, 150) == blended(GRAY)  # interior: alpha blend of gray and the consensus colour
    assert px(overlay, 100, 150) == CONSENSUS_COLOR  # region boundary: opaque outline
    assert px(overlay, 150, 199) == CONSENSUS_COLOR
    assert px(overlay, 150, 201) == (GRAY,) * 3  # just outside the region (and inside box #1)


def test_box_outline_has_trajectory_color(overlay):
    color = trajectory_color(0)
    for x, y in [(90, 150), (209, 150), (150, 209), (150, 90)]:  # half-open box: last pixel is 209
        assert px(overlay, x, y) == color, (x, y)
    assert px(overlay, 89, 150) == (GRAY,) * 3


def test_wrong_trajectory_is_dashed(overlay):
    color = trajectory_color(1)
    left = [px(overlay, 20, y) for y in range(200, 280)]
    bottom = [px(overlay, x, 279) for x in range(20, 120)]
    for edge in (left, bottom):
        assert edge.count(color) > 10  # dashes ...
        assert edge.count((GRAY,) * 3) > 10  # ... and gaps
    assert px(overlay, 20, 200) == color  # dashes start at the corners


def test_legend_panel(overlay):
    arr = np.asarray(overlay)
    legend = arr[:, 400:]
    assert (legend == np.array(BACKGROUND)).all(axis=-1).mean() > 0.5  # a panel, not the image
    colors = {tuple(c) for c in legend.reshape(-1, 3)}
    assert trajectory_color(0) in colors and trajectory_color(1) in colors  # swatches
    assert sum(1 for c in colors if min(c) > 200) > 0  # light text


def test_deterministic(overlay):
    trajs = [
        TrajectoryView([(90, 90, 210, 210)], correct=True, reward=2.5, tool_reward=1.0, iou=0.69, label="#1"),
        TrajectoryView([(20, 200, 120, 280)], correct=False, reward=0.5, tool_reward=0.0, iou=None, label="#2"),
    ]
    again = render_group_overlay(gray_image(400, 300), trajs, [(100, 100, 200, 200)])
    assert again.tobytes() == overlay.tobytes()


def test_title_bar_shifts_image():
    traj = [TrajectoryView([(10, 10, 50, 50)], True, 2.0, 1.0, 1.0, "#1")]
    plain = render_group_overlay(gray_image(300, 300), traj, [])
    titled = render_group_overlay(gray_image(300, 300), traj, [], title="step 1 | idx 2 | gt: " + "x" * 500)
    assert titled.width == plain.width  # a long title is truncated, never widens the picture
    dy = titled.height - plain.height
    assert dy > 0
    assert px(titled, 10, 30 + dy) == trajectory_color(0) == px(plain, 10, 30)


def test_grayscale_16bit_small_image_enlarged():
    arr = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 20).astype(np.uint16)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    traj = [TrajectoryView([(16, 16, 32, 32)], True, 2.0, 1.0, 1.0, "#1")]
    out = render_group_overlay(img, traj, [(16, 16, 32, 32)])
    # 64 px < min_side 256: enlarged x4 with nearest neighbour, boxes with it (64..128)
    assert out.height >= 192 and out.width > 256
    assert px(out, 64, 100) == trajectory_color(0)
    assert px(out, 100, 100) != px(out, 100, 150)  # tinted inside the consensus
    assert px(out, 0, 0) == (0, 0, 0) and px(out, 255, 191)[0] == 255  # windowed to the full 0..255 range


def test_huge_image_downscaled_to_max_side():
    img = Image.new("L", (4000, 3000), 60)
    traj = [TrajectoryView([(1000, 1000, 2000, 2000)], True, 2.0, 1.0, 0.9, "#1")]
    out = render_group_overlay(img, traj, [(1000, 1000, 2000, 2000)], max_side=512)
    # image area 512 x 384, boxes scaled by 0.128: (128, 128, 256, 256)
    assert out.height == 384 or out.height > 384 and px(out, 300, 383) == (60, 60, 60)
    assert px(out, 511, 383) == (60, 60, 60)
    assert tuple(out.getpixel((512, 383))) != (60, 60, 60)  # the legend starts at x = 512
    assert px(out, 128, 200) == trajectory_color(0)
    assert px(out, 200, 200) == blended(60)


def test_forks_are_marked_in_image_and_legend():
    base = TrajectoryView([(20, 20, 120, 120)], True, 2.0, 1.0, 1.0, "#1", fork=False)
    fork = TrajectoryView([(150, 20, 250, 120)], True, 2.0, 1.0, 1.0, "#2", fork=True, fork_of="#1")
    out = render_group_overlay(gray_image(300, 125), [base, fork], [])
    # a fork's box has a filled triangle in its bottom-right corner; a base's corner is only outline
    assert px(out, 245, 115) == trajectory_color(1)
    assert px(out, 115, 115) == (GRAY,) * 3
    unknown = render_group_overlay(gray_image(300, 125), [replace_fork(base, None), replace_fork(fork, None)], [])
    assert px(unknown, 245, 115) == (GRAY,) * 3  # no fork information: nothing drawn for it
    assert out.width > unknown.width  # the legend gained a "kind" column (base / fork of #1)
    assert out.height > unknown.height  # ... and the note explaining the triangle


def replace_fork(view: TrajectoryView, fork):
    import dataclasses

    return dataclasses.replace(view, fork=fork, fork_of=None)


def test_many_trajectories_distinct_colors():
    colors = [trajectory_color(i) for i in range(16)]
    assert len(set(colors)) == 16 and CONSENSUS_COLOR not in colors


# --------------------------------------------------------------------------------------------------
# group_overlays, records, save_png, write_step_overlays
# --------------------------------------------------------------------------------------------------


def test_group_overlays_one_panel_per_used_image():
    images = [gray_image(300, 300), gray_image(300, 300, 90), gray_image(300, 300, 200)]
    members = [
        MemberView([(0, (10, 10, 60, 60)), (7, (1, 1, 5, 5))], True, 2.0, 1.0, 0.5, "#1"),
        MemberView([], False, 0.0, 0.0, None, "#2"),
    ]
    panels = group_overlays(images, members, [(2, (100, 100, 150, 150))])
    assert len(panels) == 2  # image 0 (boxes) and image 2 (consensus); index 7 does not exist
    colors = [{tuple(c) for c in np.asarray(p).reshape(-1, 3)} for p in panels]
    assert blended(200) in colors[1] and (200, 200, 200) in colors[1]  # panel 1 is image 2, tinted
    assert trajectory_color(0) in colors[0] and (GRAY,) * 3 in colors[0] and blended(GRAY) not in colors[0]
    assert group_overlays(images, [MemberView([], True, 1.0, 0.0, None, "#1")], []) == []
    assert len(group_overlays(images, members, {0: [(0, 0, 10, 10)]})) == 1


def test_parse_image_boxes():
    text = json.dumps([[0, 1, 2, 30, 40], [1, "5", 5, 9, 9.5], [0, 1, 1, 1, 5], [-1, 0, 0, 2, 2], [0.5, 0, 0, 2, 2]])
    assert parse_image_boxes(text) == [(0, (1.0, 2.0, 30.0, 40.0)), (1, (5.0, 5.0, 9.0, 9.5))]
    assert parse_image_boxes([[2.0, 0, 0, 1, 1]]) == [(2, (0.0, 0.0, 1.0, 1.0))]
    for bad in (None, "", "not json", "{}", "[[0, NaN, 0, 1, 1]]", [[0, 1, 2]], 5):
        assert parse_image_boxes(bad) == []


def test_members_from_records():
    recs = [
        {"zoom_boxes_json": "[[0, 1, 1, 9, 9]]", "acc": 1.0, "score": 2.5, "tool_reward": 1.0, "cca_iou": 0.8},
        {"zoom_boxes_json": "[]", "acc": "0.0", "score": "0.5", "tool_reward": 0.0, "cca_iou": 0.0},
        {
            "zoom_boxes_json": "[[0, 2, 2, 9, 9]]",
            "acc": 1,
            "score": 2.0,
            "tool_reward": 0.5,
            "cca_iou": "0.3",
            "cca_in_quorum": True,
            "cca_consensus_json": "[[0, 1, 1, 9, 9]]",
        },
    ]
    members, consensus = members_from_records(recs)
    assert [m.label for m in members] == ["#1", "#2", "#3"]
    assert [m.correct for m in members] == [True, False, True]
    assert [m.iou for m in members] == [0.8, None, 0.3]
    assert members[1].reward == 0.5 and members[2].tool_reward == 0.5
    assert consensus == [(0, (1.0, 1.0, 9.0, 9.0))]


def test_fork_field_of_records():
    box = "[[0, 1, 1, 9, 9]]"
    recs = [
        {"zoom_boxes_json": box, "acc": 1.0, "fork": False},
        {"zoom_boxes_json": box, "acc": 1.0, "fork": True, "fork_of": 0},
        {"zoom_boxes_json": box, "acc": 1.0, "fork": "true"},  # through json.dumps(default=str)
        {"zoom_boxes_json": box, "acc": 1.0, "medvr_fork": None},  # a V1 row's extra_fields: a base ...
        {"zoom_boxes_json": box, "acc": 1.0, "medvr_fork": {"call": 0, "turn": 1}},  # ... and a fork
        {"zoom_boxes_json": box, "acc": 1.0, "fork": 1.0, "fork_of": 9},  # no such member: base not named
        {"zoom_boxes_json": box, "acc": 1.0},  # unknown
    ]
    members, _ = members_from_records(recs)
    assert [m.fork for m in members] == [False, True, True, False, True, True, None]
    assert [m.fork_of for m in members] == [None, "#1", None, None, None, None, None]


def test_write_step_overlays_with_forks(tmp_path):
    box = (0, (10, 10, 50, 50))
    records = [record("abcd", 3, [box], 1.0, 1.0, 1.0, [box]), record("abcd", 3, [box], 1.0, 1.0, 1.0, [box])]
    records[0]["fork"], records[1]["fork"] = False, True
    plain = write_step_overlays(tmp_path / "a", 1, [[gray_image(100, 80)]], [[dict(r) for r in records]], 1)
    for r in records:
        del r["fork"]
    unknown = write_step_overlays(tmp_path / "b", 1, [[gray_image(100, 80)]], [records], 1)
    with Image.open(plain[0]) as a, Image.open(unknown[0]) as b:
        assert a.width > b.width  # the "kind" column


def test_save_png_atomic(tmp_path):
    img = gray_image(20, 10)
    path = save_png(img, tmp_path / "a" / "b" / "x.png")
    assert path.exists() and os.listdir(path.parent) == ["x.png"]
    save_png(gray_image(20, 10, 5), path)  # replaces
    with Image.open(path) as back:
        assert back.size == (20, 10) and back.getpixel((0, 0)) == (5, 5, 5)
    assert os.listdir(path.parent) == ["x.png"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_png_files_get_the_users_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = save_png(gray_image(8, 8), tmp_path / "x.png")
        box = (0, (1, 1, 5, 5))
        [step_png] = write_step_overlays(tmp_path / "viz", 1, [[gray_image(20, 20)]], [[record("u", 0, [box], 1.0)]], 1)
    finally:
        os.umask(old)
    for p in (path, step_png):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, oct(p.stat().st_mode)


def record(uid, index, boxes, acc, tool=0.0, iou=0.0, consensus=(), uid_key="group_uid"):
    return {
        uid_key: uid,
        "sample_index": index,
        "zoom_boxes_json": json.dumps([[k, *b] for k, b in boxes]),
        "cca_consensus_json": json.dumps([[k, *b] for k, b in consensus]),
        "acc": acc,
        "tool_reward": tool,
        "cca_iou": iou,
        "score": acc + tool,
    }


def test_write_step_overlays(tmp_path):
    images = [[gray_image(100, 80)], [gray_image(100, 80)], [gray_image(100, 80)]]
    box = (0, (10, 10, 50, 50))
    groups = [
        [record("aaaa-no-boxes", 0, [], 1.0)],
        [record("0123456789abcdef", 5, [box], 1.0, 1.0, 1.0, [box]), record("0123456789abcdef", 5, [], 0.0)],
        [record("ffff", 6, [box], 1.0, 1.0, 1.0, [box], uid_key="uid")],  # plain "uid" is read too
    ]
    paths = write_step_overlays(tmp_path / "viz", 7, images, groups, max_groups=1)
    assert [p.name for p in paths] == ["step7_idx5_01234567.png"]
    assert paths[0].exists()
    paths = write_step_overlays(tmp_path / "viz2", 7, images, groups, max_groups=5)
    assert [p.name for p in paths] == ["step7_idx5_01234567.png", "step7_idx6_ffff.png"]
    # a broken group (image missing) is logged and skipped, never raised
    assert write_step_overlays(tmp_path / "viz3", 7, [[]], [groups[1]], max_groups=5) == []


def test_overlay_filename():
    assert overlay_filename(3, 17, "1a2b3c4d-5e6f") == "step3_idx17_1a2b3c4d.png"
    assert overlay_filename("3", 17, None, 1) == "step3_idx17_nouid_img1.png"
    assert overlay_filename(3, 17, "../../x y") == "step3_idx17_xy.png"


# --------------------------------------------------------------------------------------------------
# CLI over veRL's own rollout dump
# --------------------------------------------------------------------------------------------------


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    """A tiny veRL parquet (images as bytes) and a rollout dump written by veRL's own writer."""
    import pandas as pd
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    root = tmp_path_factory.mktemp("viz_cli")
    ct = Image.fromarray((np.arange(120 * 160).reshape(120, 160) % 4096).astype(np.uint16))  # 16-bit
    rows = [
        {"images": [{"bytes": png_bytes(gray_image(200, 150))}], "extra_info": {"index": 10, "split": "train"}},
        {
            "images": [{"bytes": png_bytes(gray_image(200, 150, 60))}, {"bytes": png_bytes(ct)}],
            "extra_info": {"index": 11, "split": "train"},
        },
        {"images": [{"bytes": png_bytes(gray_image(64, 64))}], "extra_info": {"index": 12, "split": "train"}},
    ]
    df = pd.DataFrame(
        {
            "data_source": ["synthetic"] * 3,
            "prompt": [[{"role": "user", "content": "<image>Where?"}]] * 3,
            "images": [r["images"] for r in rows],
            "ability": ["medical"] * 3,
            "reward_model": [{"style": "rule", "ground_truth": "A"}] * 3,
            "extra_info": [r["extra_info"] for r in rows],
        }
    )
    data = root / "train.parquet"
    df.to_parquet(data)

    # (uid, sample_index, boxes per trajectory, acc per trajectory)
    groups = [
        (
            "u1-group-one",
            10,
            [[(0, (40, 30, 120, 100))], [(0, (50, 40, 130, 110))], [(0, (0, 0, 30, 30))], []],
            [1, 1, 0, 0],
        ),
        ("u2-group-two", 11, [[(0, (10, 10, 60, 60)), (1, (20, 20, 80, 70))], [(1, (30, 25, 90, 75))]], [1, 1]),
        ("u3-no-index", -1, [[(0, (5, 5, 20, 20))]], [1]),  # the record with a missing sample_index
        ("u4-no-row", 99, [[(0, (5, 5, 20, 20))]], [1]),  # not a row of the dataset
        ("u5-no-boxes", 12, [[], []], [1, 0]),
        ("", 12, [[(0, (5, 5, 40, 40))]], [1]),  # no group uid: grouped by (step, sample_index)
        ("", -1, [[(0, (5, 5, 40, 40))]], [1]),  # neither: skipped
    ]
    extra: dict[str, list] = {
        k: [] for k in ("group_uid", "sample_index", "zoom_boxes_json", "cca_consensus_json", "acc", "tool_reward")
    }
    extra.update(cca_iou=[], cca_in_quorum=[], cca_quorum_size=[])
    inputs, outputs, gts, scores = [], [], [], []
    for uid, index, boxes, accs in groups:
        result = group_rewards([MemberOutcome(float(a), float(a), b) for a, b in zip(accs, boxes)])
        consensus = json.dumps([[k, *b] for k, b in result.consensus])
        for b, a, r in zip(boxes, accs, result.members):
            inputs.append("Where is the lesion?")
            outputs.append("<answer>A</answer>")
            gts.append("A")
            scores.append(r.reward)
            extra["group_uid"].append(uid)
            extra["sample_index"].append(index)
            extra["zoom_boxes_json"].append(json.dumps([[k, *bb] for k, bb in b]))
            extra["cca_consensus_json"].append(consensus)
            extra["acc"].append(float(a))
            extra["tool_reward"].append(r.tool_reward)
            extra["cca_iou"].append(r.iou)
            extra["cca_in_quorum"].append(r.in_quorum)
            extra["cca_quorum_size"].append(result.quorum_size)
    RayPPOTrainer._write_generations(inputs, outputs, gts, scores, extra, str(root / "rollouts"), 3)
    jsonl = root / "rollouts" / "3.jsonl"
    with open(jsonl, "a") as fh:
        fh.write("{not json\n")
    return {"root": root, "data": data, "jsonl": jsonl}


def test_dump_has_verl_format(dump):
    first = json.loads(dump["jsonl"].read_text().splitlines()[0])
    assert {"input", "output", "gts", "score", "step", "group_uid", "sample_index", "zoom_boxes_json"} <= set(first)
    assert first["step"] == 3


def test_cli_end_to_end(dump):
    out = dump["root"] / "png"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "medvr_verl.viz", str(dump["jsonl"]), "--data", str(dump["data"]), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "step3_idx10_u1-group.png",
        "step3_idx11_u2-group_img0.png",
        "step3_idx11_u2-group_img1.png",
        "step3_idx12_nouid.png",
    ]
    for name in names:
        with Image.open(out / name) as img:
            assert img.mode == "RGB" and img.width > 256
    assert "no sample_index: 2" in proc.stdout
    assert "row not in dataset: 1" in proc.stdout
    assert "(1 unreadable lines)" in proc.stdout
    assert "1 without any zoom box" in proc.stdout
    assert "groups rendered:         3 -> 4 PNG file(s)" in proc.stdout
    assert "viz" in proc.stderr and "group" in proc.stderr  # tqdm progress bar
    assert "u3-no-index" in proc.stderr and "skipped" in proc.stderr


def test_cli_options_and_errors(dump, tmp_path, capsys):
    summary = render_rollouts([dump["jsonl"].parent], [dump["data"]], tmp_path / "a", max_groups=1, progress=False)
    assert summary.rendered_groups == 1 and [p.name for p in summary.written] == ["step3_idx10_u1-group.png"]
    assert render_rollouts([dump["jsonl"]], [dump["data"]], tmp_path / "b", step=4, progress=False).records == 0
    # row position instead of extra_info.index: index 10/11 are not rows of a 3-row dataset
    by_row = render_rollouts([dump["jsonl"]], [dump["data"]], tmp_path / "c", index_by="row", progress=False)
    assert by_row.rendered_groups == 0 and by_row.skipped_missing_row == 4

    assert main([str(tmp_path / "missing.jsonl"), "--data", str(dump["data"]), "--out", str(tmp_path)]) == 2
    assert "rollout file not found" in capsys.readouterr().err
    assert main([str(dump["jsonl"]), "--data", str(tmp_path / "none.parquet"), "--out", str(tmp_path)]) == 2
    assert "dataset parquet not found" in capsys.readouterr().err
    rc = main([str(dump["jsonl"]), "--data", str(dump["data"]), "--out", str(tmp_path / "d"), "--index-by", "row"])
    assert rc == 1  # every group failed
