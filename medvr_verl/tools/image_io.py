"""Medical image I/O: open PNG/JPEG/TIFF/DICOM as 8-bit images, convert any Pillow mode to 8-bit.

Pure Pillow + numpy; pydicom is an optional import (``pip install pydicom``), needed only for DICOM.
Imports neither veRL nor torch.

Conversion rules (shared by :func:`load_medical_image` and the zoom tool):

* 8-bit modes keep their values: ``L`` and ``RGB`` pass through, ``1`` becomes 0/255, ``P`` is
  expanded through its palette, ``CMYK`` / ``YCbCr`` / ``LAB`` / ``HSV`` / ``RGBX`` use Pillow's
  conversions to RGB.
* Alpha is composited on black: ``LA`` / ``RGBA`` / ``PA`` (and ``P`` with a ``transparency`` entry)
  become ``value * alpha / 255``; premultiplied ``La`` / ``RGBa`` already are that, so their alpha
  band is dropped.
* High-bit-depth grayscale (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``, ``I`` 32-bit int, ``F`` float32)
  is windowed linearly to 0..255 by the intensity range ``(lo, hi)`` -- by default the min and max of
  the finite values of the image passed in; the zoom tool passes the window of the *full* image so a
  crop keeps the brightness mapping of the image it came from. NaN and -inf map to 0, +inf to 255. A
  constant image (``hi == lo``) maps to 0 (black) -- no division by zero.

Size (over 500 lines): every Pillow mode, block-wise windowing, DICOM and the per-prompt original
image cache share the conversion rules above; splitting them would split those rules.
"""

from __future__ import annotations

import io
import math
import os
import threading
import warnings
from typing import Any, BinaryIO, Union

import numpy as np
from PIL import Image

__all__ = [
    "USE_PIL_LIMIT",
    "EmptyImageError",
    "ImageTooLargeError",
    "OriginalImages",
    "check_pixel_budget",
    "crop_to_rgb8",
    "intensity_window",
    "is_high_bit_depth",
    "load_medical_image",
    "resolve_pixel_limit",
    "to_8bit",
    "to_rgb8",
    "window_region",
    "window_to_uint8",
]

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO, Image.Image]

_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_ALPHA_MODES = ("LA", "PA", "RGBA")
_PREMULTIPLIED_MODES = ("La", "RGBa")
_PILLOW_TO_RGB_MODES = ("1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")

# Pillow's lazy ``load()`` of a file-backed image is not thread-safe; the zoom tool crops in worker
# threads, so loads go through this lock (a no-op cost once an image is loaded).
_LOAD_LOCK = threading.Lock()


class ImageTooLargeError(ValueError):
    """The image has more pixels than the configured limit (decompression-bomb guard)."""


class EmptyImageError(ValueError):
    """The image has zero width or height: nothing to show the model or to zoom into."""


class _UsePilLimit:
    """Sentinel type: use ``PIL.Image.MAX_IMAGE_PIXELS`` as read at call time."""

    def __repr__(self) -> str:
        return "USE_PIL_LIMIT"


#: Default of every ``max_image_pixels`` argument: Pillow's own ``Image.MAX_IMAGE_PIXELS`` (read when
#: the check runs, so changing Pillow's global changes the limit). ``None`` disables the check, as
#: it does in Pillow.
USE_PIL_LIMIT: Any = _UsePilLimit()


def resolve_pixel_limit(max_image_pixels: Any = USE_PIL_LIMIT) -> int | None:
    """The effective pixel limit: ``USE_PIL_LIMIT`` -> Pillow's current limit, ``None`` -> none."""
    if max_image_pixels is USE_PIL_LIMIT or isinstance(max_image_pixels, _UsePilLimit):
        limit = Image.MAX_IMAGE_PIXELS
        return None if limit is None else int(limit)
    if max_image_pixels is None:
        return None
    if isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, (int, float)):
        raise TypeError(f"max_image_pixels must be an int or None, got {max_image_pixels!r}")
    if not max_image_pixels > 0:
        raise ValueError(f"max_image_pixels must be positive, got {max_image_pixels!r}")
    return int(max_image_pixels)


def check_pixel_budget(size: tuple[int, int], max_image_pixels: Any = USE_PIL_LIMIT) -> None:
    """Raise :class:`ImageTooLargeError` when ``width * height`` exceeds the limit, and
    :class:`EmptyImageError` when the width or the height is zero.

    Only the size is looked at, so for a lazily opened file this runs before any pixel is decoded.
    """
    limit = resolve_pixel_limit(max_image_pixels)
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise EmptyImageError(f"image of {width}x{height} pixels is empty (zero width or height)")
    if limit is not None and width * height > limit:
        raise ImageTooLargeError(
            f"image of {width}x{height} = {width * height} pixels exceeds the limit of {limit} pixels"
        )


def ensure_loaded(img: Image.Image) -> None:
    """``img.load()`` under a process-wide lock (lazy file-backed loads are not thread-safe)."""
    with _LOAD_LOCK:
        img.load()


# --------------------------------------------------------------------------------------------------
# Mode conversion
# --------------------------------------------------------------------------------------------------


def is_high_bit_depth(mode: str) -> bool:
    """True for the modes windowed to 8 bits: ``I``, ``F`` and every ``I;...`` raw integer mode."""
    return mode in ("I", "F") or mode.startswith("I;")


# Pixels per block when high-bit-depth images are scanned or windowed: the float64 temporaries
# stay at a few MB whatever the image size (no whole-image float copies).
_BLOCK_PIXELS = 1 << 18


def _row_blocks(height: int, width: int):
    """``(r0, r1)`` row ranges of about ``_BLOCK_PIXELS`` pixels covering ``height`` rows."""
    step = max(1, _BLOCK_PIXELS // max(1, width))
    for r0 in range(0, height, step):
        yield r0, min(height, r0 + step)


def _finite_range(arr: np.ndarray) -> tuple[float, float] | None:
    """Min and max of the finite values of ``arr``, scanned in row blocks (no full-size mask)."""
    if arr.size == 0:
        return None
    if arr.dtype.kind != "f":
        return float(arr.min()), float(arr.max())
    lo = hi = None
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(1, -1)
    for r0, r1 in _row_blocks(flat.shape[0], flat.shape[1]):
        block = flat[r0:r1]
        finite = block[np.isfinite(block)]
        if finite.size:
            b_lo, b_hi = float(finite.min()), float(finite.max())
            lo = b_lo if lo is None else min(lo, b_lo)
            hi = b_hi if hi is None else max(hi, b_hi)
    return None if lo is None else (lo, hi)


def intensity_window(img: Image.Image) -> tuple[float, float] | None:
    """Min and max of the finite pixel values of a single-band image; ``None`` when there are none.

    Uses Pillow's ``getextrema`` (C, no copy) for ``I`` / ``I;16`` and for ``F`` when both extremes
    are finite; everything else is scanned in row blocks of the image, so memory stays at one block
    whatever the image size.
    """
    if img.mode in ("I", "I;16", "F"):
        try:
            lo, hi = img.getextrema()
            if img.mode != "F" or (math.isfinite(lo) and math.isfinite(hi)):
                return float(lo), float(hi)
        except Exception:  # pragma: no cover - fall through to numpy
            pass
    width, height = img.size
    lo = hi = None
    for r0, r1 in _row_blocks(height, width):
        rng = _finite_range(np.asarray(img.crop((0, r0, width, r1))))
        if rng is not None:
            lo = rng[0] if lo is None else min(lo, rng[0])
            hi = rng[1] if hi is None else max(hi, rng[1])
    return None if lo is None else (lo, hi)


def _window_block(block: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """One block of :func:`window_to_uint8` (float64 temporaries of the block's size only)."""
    a = np.array(block, dtype=np.float64)  # always a copy: modified in place below
    np.nan_to_num(a, copy=False, nan=lo, posinf=hi, neginf=lo)
    a -= lo
    a *= 255.0 / (hi - lo)
    np.clip(a, 0.0, 255.0, out=a)
    np.rint(a, out=a)
    return a.astype(np.uint8)


def _usable_window(lo: float | None, hi: float | None) -> bool:
    return lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) and hi > lo


def window_to_uint8(arr: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    """Map ``[lo, hi]`` linearly to ``[0, 255]`` (clipped, rounded). Constant range -> zeros.

    Works in row blocks, so the float64 temporaries are a few MB whatever the size of ``arr``.
    """
    arr = np.asarray(arr)
    out = np.zeros(arr.shape, dtype=np.uint8)
    if not _usable_window(lo, hi) or arr.size == 0:
        return out
    if arr.ndim == 0:
        out[...] = _window_block(arr, lo, hi)
        return out
    width = arr.size // max(1, arr.shape[0])
    for r0, r1 in _row_blocks(arr.shape[0], width):
        out[r0:r1] = _window_block(arr[r0:r1], lo, hi)
    return out


def window_region(
    img: Image.Image, box: tuple[int, int, int, int] | None = None, window: tuple[float, float] | None = None
) -> Image.Image:
    """8-bit ``L`` of region ``box`` (ints ``x1, y1, x2, y2``; default the whole image) of a
    high-bit-depth image, windowed by ``window`` (default: the image's own finite min/max).

    Reads the region in row blocks straight from ``img``: no copy of the whole image, no float64
    copy of the whole region; the only full-size buffer is the 8-bit output.
    """
    x1, y1, x2, y2 = box if box is not None else (0, 0, *img.size)
    if window is None:
        window = intensity_window(img)
    lo, hi = window if window is not None else (None, None)
    out = np.zeros((y2 - y1, x2 - x1), dtype=np.uint8)
    if _usable_window(lo, hi):
        for r0, r1 in _row_blocks(y2 - y1, x2 - x1):
            block = np.asarray(img.crop((x1, y1 + r0, x2, y1 + r1)))
            out[r0:r1] = _window_block(block, lo, hi)
    return Image.fromarray(out)


def _composite_on_black(img: Image.Image, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """Straight-alpha image (``LA`` / ``RGBA``) over black: ``value * alpha / 255``.

    ``box``: only that region (ints ``x1, y1, x2, y2``). Read in row blocks, so the uint16
    temporaries stay small; the only full-size buffer is the 8-bit output.
    """
    x1, y1, x2, y2 = box if box is not None else (0, 0, *img.size)
    bands = len(img.getbands()) - 1
    out = np.empty((y2 - y1, x2 - x1, bands), dtype=np.uint8)
    for r0, r1 in _row_blocks(y2 - y1, (x2 - x1) * (bands + 1)):
        arr = np.asarray(img.crop((x1, y1 + r0, x2, y1 + r1)), dtype=np.uint16)
        color, alpha = arr[..., :-1], arr[..., -1:]
        color *= alpha
        color += 127
        color //= 255
        out[r0:r1] = color
    if bands == 1:
        return Image.fromarray(np.ascontiguousarray(out[..., 0]))
    return Image.fromarray(out)


def to_8bit(img: Image.Image, window: tuple[float, float] | None = None) -> Image.Image:
    """Convert any Pillow image to 8-bit ``L`` (grayscale sources) or ``RGB`` (everything else).

    ``window``: intensity range for high-bit-depth modes (see the module docstring); ``None`` -> the
    image's own finite min/max. Ignored for 8-bit modes. ``L`` and ``RGB`` images are returned as is.
    """
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if is_high_bit_depth(mode):
        return window_region(img, None, window)
    if mode == "LA" or mode == "RGBA":
        return _composite_on_black(img)
    if mode == "PA" or (mode == "P" and "transparency" in img.info):
        return _composite_on_black(img.convert("RGBA"))
    if mode == "La":
        return img.getchannel(0)
    if mode == "RGBa":
        return Image.merge("RGB", img.split()[:3])
    if mode == "1":
        return img.convert("L")
    if mode in _PILLOW_TO_RGB_MODES:
        return img.convert("RGB")
    try:
        return img.convert("RGB")
    except Exception as exc:
        raise ValueError(f"unsupported image mode {mode!r}: {exc}") from exc


def to_rgb8(img: Image.Image, window: tuple[float, float] | None = None) -> Image.Image:
    """Convert any Pillow image to 8-bit ``RGB`` (what the Qwen processor expects). See :func:`to_8bit`."""
    out = to_8bit(img, window)
    return out if out.mode == "RGB" else out.convert("RGB")


def crop_to_rgb8(
    img: Image.Image, box: tuple[int, int, int, int], window: tuple[float, float] | None = None
) -> Image.Image:
    """``to_rgb8(img.crop(box), window)`` with bounded memory: crop first, then convert.

    High-bit-depth images are windowed block by block straight from the source region
    (:func:`window_region`), so no float copy of the image or the region is ever made; other modes
    crop (a copy of the region) and convert the crop.
    """
    if is_high_bit_depth(img.mode):
        out = window_region(img, box, window)
        return out.convert("RGB")
    if img.mode in ("LA", "RGBA"):
        out = _composite_on_black(img, box)
        return out if out.mode == "RGB" else out.convert("RGB")
    return to_rgb8(img.crop(box), window)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _read_head(source: Any, n: int = 132) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:n])
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            return fh.read(n)
    if hasattr(source, "read") and hasattr(source, "seek"):
        pos = source.tell()
        try:
            return source.read(n)
        finally:
            source.seek(pos)
    return b""


def _looks_like_dicom(source: Any) -> bool:
    if isinstance(source, (str, os.PathLike)) and os.fspath(source).lower().endswith(_DICOM_SUFFIXES):
        return True
    head = _read_head(source)
    return len(head) >= 132 and head[128:132] == b"DICM"


def _as_stream(source: Any) -> Any:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    return source


def _import_pydicom():
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading DICOM files needs pydicom: `pip install pydicom` (or `pip install medvr-verl[test]`)."
        ) from exc
    return pydicom


def _first(value: Any) -> float | None:
    """First value of a possibly multi-valued DICOM element, as float; None when absent/unusable."""
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            if len(value) == 0:
                return None
            value = value[0]
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _dicom_window(arr: np.ndarray, center: float, width: float, function: str) -> np.ndarray | None:
    """DICOM VOI window to 0..255 (PS3.3 C.11.2.1.2 LINEAR / LINEAR_EXACT, C.11.2.1.3.1 SIGMOID).

    The standard's formulas with an 8-bit output range: pydicom's ``apply_windowing`` maps into the
    stored bit range (e.g. 0..4095), which would need a second, lossy rescale to 8 bits. The modality
    LUT, VOI LUT sequences and colour LUTs are pydicom's own (below).
    """
    a = arr.astype(np.float64)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        if width <= 0:
            return None
        out = 255.0 / (1.0 + np.exp(-4.0 * (a - center) / width))
    elif function == "LINEAR_EXACT":
        if width <= 0:
            return None
        out = ((a - center) / width + 0.5) * 255.0
    else:  # LINEAR (the default)
        if width < 1:
            return None
        out = ((a - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.rint(np.clip(out, 0.0, 255.0)).astype(np.uint8)


def _dicom_to_pil(source: Any, *, frame: int, max_image_pixels: Any) -> Image.Image:
    pydicom = _import_pydicom()
    try:  # pydicom >= 3
        from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
        from pydicom.pixels import pixel_array as _pixel_array

        def read_frame(ds, index):
            return _pixel_array(ds, index=index)  # YBR is converted to RGB (as_rgb=True)

    except ImportError:  # pragma: no cover - pydicom 2.x
        from pydicom.pixel_data_handlers.util import (
            apply_color_lut,
            apply_modality_lut,
            apply_voi_lut,
            convert_color_space,
        )

        def read_frame(ds, index):
            arr = ds.pixel_array
            if int(ds.get("NumberOfFrames", 1) or 1) > 1:
                arr = arr[index]
            pi = str(ds.get("PhotometricInterpretation", ""))
            if pi in ("YBR_FULL", "YBR_FULL_422"):
                arr = convert_color_space(arr, pi, "RGB")
            return arr

    ds = pydicom.dcmread(_as_stream(source), force=True)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ValueError("DICOM file holds no pixel data")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    check_pixel_budget((cols, rows), max_image_pixels)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame < frames:
        raise ValueError(f"frame {frame} out of range: the DICOM file has {frames} frame(s)")
    arr = read_frame(ds, frame if frames > 1 else None)

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        if rgb.dtype != np.uint8:  # 16-bit LUT entries
            rgb = np.rint(rgb.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(rgb))
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # RGB / YBR (already converted to RGB)
        rgb = arr[..., :3]
        if rgb.dtype != np.uint8:
            bits = int(ds.get("BitsStored", 8 * rgb.dtype.itemsize) or 8)
            scale = 255.0 / float(2**bits - 1)
            rgb = np.rint(np.clip(rgb.astype(np.float64) * scale, 0, 255)).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(rgb))

    # Grayscale: modality LUT (RescaleSlope / RescaleIntercept), then the VOI window, else min-max.
    values = apply_modality_lut(arr, ds)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    out = None
    if center is not None and width is not None:
        out = _dicom_window(values, center, width, str(ds.get("VOILUTFunction", "LINEAR")))
    if out is None and "VOILUTSequence" in ds:
        try:
            lut_values = apply_voi_lut(values, ds, prefer_lut=True)
            out = window_to_uint8(lut_values, *(_finite_range(np.asarray(lut_values)) or (None, None)))
        except Exception:
            out = None
    if out is None:
        out = window_to_uint8(values, *(_finite_range(np.asarray(values)) or (None, None)))
    if photometric == "MONOCHROME1":  # 0 = white
        out = 255 - out
    return Image.fromarray(np.ascontiguousarray(out))


def load_medical_image(source: ImageSource, *, frame: int = 0, max_image_pixels: Any = USE_PIL_LIMIT) -> Image.Image:
    """Open an image file (PNG / JPEG / TIFF / anything Pillow reads, or DICOM) as 8-bit ``L`` or ``RGB``.

    ``source``: a path, bytes, a binary file object, or an already opened ``PIL.Image``.
    ``frame``: frame of a multi-frame DICOM or multi-page TIFF (0-based).
    ``max_image_pixels``: decompression-bomb guard checked on the header before decoding; default
    Pillow's ``Image.MAX_IMAGE_PIXELS``, ``None`` disables it. Raises :class:`ImageTooLargeError`.

    DICOM (detected by the ``DICM`` magic or a ``.dcm``/``.dicom`` suffix; needs pydicom): grayscale
    pixels go through the modality LUT (rescale slope/intercept), then the first VOI window
    (WindowCenter/WindowWidth, honouring VOILUTFunction), else the VOI LUT sequence, else min-max;
    MONOCHROME1 is inverted; PALETTE COLOR goes through its LUT; YBR is converted to RGB; colour data
    above 8 bits is scaled by BitsStored. Other formats go through :func:`to_8bit` (min-max for
    high-bit-depth grayscale). EXIF orientation is not applied (veRL's loader does not apply it either,
    and box coordinates must refer to the same pixels).
    """
    if isinstance(source, Image.Image):
        check_pixel_budget(source.size, max_image_pixels)
        ensure_loaded(source)
        return to_8bit(source)
    if _looks_like_dicom(source):
        return _dicom_to_pil(source, frame=frame, max_image_pixels=max_image_pixels)

    limit = resolve_pixel_limit(max_image_pixels)
    try:
        with warnings.catch_warnings():
            # Our own limit replaces Pillow's; its warning/error are turned into ImageTooLargeError.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(_as_stream(source))
    except Image.DecompressionBombError as exc:
        if limit is None or (Image.MAX_IMAGE_PIXELS is not None and limit > 2 * Image.MAX_IMAGE_PIXELS):
            # Pillow refused (more than twice its own limit) although ours may allow it: open again
            # without Pillow's check and let check_pixel_budget decide. This briefly changes Pillow's
            # global, so do not rely on it from several threads at once.
            old = Image.MAX_IMAGE_PIXELS
            try:
                Image.MAX_IMAGE_PIXELS = None
                img = Image.open(_as_stream(source))
            finally:
                Image.MAX_IMAGE_PIXELS = old
        else:
            raise ImageTooLargeError(str(exc)) from exc
    except Image.UnidentifiedImageError:
        # A DICOM file without the 128-byte preamble has no magic; try pydicom before giving up.
        try:
            return _dicom_to_pil(source, frame=frame, max_image_pixels=max_image_pixels)
        except Exception:
            pass
        raise
    check_pixel_budget(img.size, max_image_pixels)
    if frame:
        n_frames = getattr(img, "n_frames", 1)
        if not 0 <= frame < n_frames:
            raise ValueError(f"frame {frame} out of range: the image has {n_frames} frame(s)")
        img.seek(frame)
    img.load()  # truncated files raise OSError (unless the caller set ImageFile.LOAD_TRUNCATED_IMAGES)
    return to_8bit(img)


class OriginalImages:
    """The prompt's images as the dataset holds them, before veRL's vision path resizes them.

    veRL (``qwen_vl_utils.fetch_image``) shrinks every prompt image to the processor's pixel budget
    before the model sees it, and keeps only that copy. The zoom tool crops where the detail is: in
    the image as stored. This reads the image items of the chat ``messages`` in the order veRL
    extracts them (content items with an ``image`` / ``image_url`` key or ``type`` ``image``) and
    loads each on first use: a ``PIL.Image`` as is, ``{"bytes": ...}`` / bytes, a local path or
    ``file://`` URL (DICOM too, via :func:`load_medical_image`), or a base64 ``data:image`` URL.
    Anything else (a remote URL) gives ``None`` and the tool falls back to veRL's copy.

    Thread-safe: each image is decoded at most once however many threads ask (``decodes`` counts
    them). The V1 worker makes one per prompt, shared by its samples and EVR forks, and calls
    :meth:`release` when the group is done. :meth:`get` may decode: call it off the event loop (the
    zoom tool does, in its executor).
    """

    def __init__(self, messages: list[dict]):
        self._sources: list[Any] = []
        for message in messages or []:
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            for item in content:
                if isinstance(item, dict) and ("image" in item or "image_url" in item or item.get("type") == "image"):
                    self._sources.append(item.get("image", item.get("image_url", item)))
        self._cache: dict[int, Image.Image | None] = {}
        self._lock = threading.Lock()
        self.decodes = 0
        """How many images were decoded (read from their source) so far."""

    def __len__(self) -> int:
        return len(self._sources)

    def get(self, index: int) -> Image.Image | None:
        """Prompt image ``index`` at its stored resolution, or ``None`` when it cannot be read here."""
        if not 0 <= index < len(self._sources):
            return None
        with self._lock:
            if index not in self._cache:
                self.decodes += 1
                self._cache[index] = self._load(self._sources[index])
            return self._cache[index]

    def release(self) -> None:
        """Drop the decoded images (a later :meth:`get` decodes again)."""
        self._cache = {}  # no lock: never blocks the event loop behind a decode in flight

    @staticmethod
    def _load(source: Any) -> Image.Image | None:
        if isinstance(source, Image.Image):
            return source
        if isinstance(source, dict):
            source = source.get("bytes", source.get("image", source.get("path")))
        if isinstance(source, str):
            if source.startswith("data:image"):
                import base64

                source = base64.b64decode(source.split(",", 1)[1])
            elif source.startswith("file://"):
                source = source[len("file://") :]
            elif "://" in source:
                return None
        try:
            return load_medical_image(source) if source is not None else None
        except Exception:
            return None
