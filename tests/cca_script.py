"""A scripted MedVR group for integration tests: known zoom boxes and answers, known rewards.

Every prompt marked ``[script:<key>]`` gets ``len(VARIANTS)`` trajectories in a group. Each
trajectory takes the next variant (a per-key counter in the client's process): it zooms into the
variant's box (model-space pixels of a 196x112 model input), then answers. The expected composite
rewards under ``medvr_cca`` (consensus, eta=0.5, w_tool=1, format_weight=1) are worked out by hand:

- quorum: the correct trajectories with a box -> variants 0, 1, 2 (|T+| = 3)
- consensus: pixels covered by more than 1.5 of their unions -> the top-left quadrant (0 and 1)
- IoU with it: 1.0, 1.0, 0.0 -> tool rewards 1.0, 1.0, 0.5; variant 3 is wrong -> 0
- R = acc - w_format * (1 - format) + 1(acc > 0) * R_tool -> 2.0, 2.0, 1.5, 0.0 (all well formatted)
"""

from __future__ import annotations

import itertools
import re

from PIL import Image

from medvr_verl.testing.scripting import medvr_config, zoom_call  # noqa: F401  (re-exported for tests)

IMAGE_SIZE = (200, 120)  # original pixels; Qwen2.5-VL's smart_resize makes it 196x112
TOP_LEFT = [0, 0, 98, 56]
BOTTOM_RIGHT = [98, 56, 196, 112]
OPTIONS = {"A": "left lung", "B": "right lung"}
MC = {"question_type": "multiple_choice", "options": OPTIONS}

# (box, answer, expected reward, expected tool reward)
VARIANTS = [
    (TOP_LEFT, "A", 2.0, 1.0),
    (TOP_LEFT, "A", 2.0, 1.0),
    (BOTTOM_RIGHT, "A", 1.5, 0.5),
    (TOP_LEFT, "B", 0.0, 0.0),
]
_VARIANT = re.compile(r"variant (\d+)")


def make_script():
    """A ``ScriptedLLMClient`` script callable (picklable by cloudpickle into Ray actors)."""
    counters: dict[str, itertools.count] = {}

    def script(ctx) -> str:
        if ctx.turn == 0:
            k = next(counters.setdefault(ctx.key, itertools.count())) % len(VARIANTS)
            return f"<think>variant {k}: look at the lung</think>" + zoom_call(VARIANTS[k][0])
        k = int(_VARIANT.findall(ctx.text)[-1])
        return f"<think>variant {k}: seen it</think><answer>{VARIANTS[k][1]}</answer>"

    return script


def variant_of(response_text: str) -> int:
    return int(_VARIANT.search(response_text).group(1))


def chest_image() -> Image.Image:
    """A synthetic 'radiograph': bright left lung field top-left, the rest dark."""
    image = Image.new("L", IMAGE_SIZE, 20)
    image.paste(200, (10, 10, 90, 55))
    return image.convert("RGB")


def cca_config(model_path, *extra, n=len(VARIANTS), num_workers=1, **kwargs):
    """veRL's trainer config with the zoom tool, the tool chat template and medvr_cca (2 reward workers)."""
    return medvr_config(model_path, extra, n=n, num_workers=num_workers, **kwargs)
