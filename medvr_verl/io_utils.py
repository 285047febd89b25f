"""Writing output files and showing progress: the one place the package does either.

* :class:`AtomicFile`: a file appears whole or not at all. Content goes to a temporary file in the
  target's folder (same file system, so the final ``os.replace`` is atomic), which is fsynced and
  renamed over the target. The file ends with the mode an ordinary ``open(path, "w")`` would give
  it, ``0o666 & ~umask`` (the kernel applies the umask when the temporary file is created, so no
  process-wide ``os.umask`` call is needed and threads are safe). ``tempfile.mkstemp`` would leave
  ``0o600``: unreadable to colleagues on a shared cluster.
* :func:`atomic_write_text`: the same for a string.
* :func:`progress`: a tqdm bar on stderr (a widget in notebooks), or a disabled bar with the same API.

Pure: imports neither veRL nor torch. tqdm comes with transformers and ``datasets`` (veRL's deps).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["AtomicFile", "atomic_write_text", "progress", "progress_write"]

_OWNER_RW = stat.S_IRUSR | stat.S_IWUSR


class AtomicFile:
    """Write ``path`` atomically through a temporary file beside it.

    As a context manager it yields the temporary path; leaving the block normally commits (fsync,
    final mode, rename), an exception discards the temporary file::

        with AtomicFile("out/results.json") as tmp:
            tmp.write_text(text)

    Args:
        path: the file to write; its folder is created.
        temp: a fixed temporary path (e.g. ``results.jsonl.partial``, readable while a long run
            writes it); default a fresh ``.<name>.<random>.tmp`` in the same folder.

    The final mode is the one the kernel gave the temporary file on creation (``0o666 & ~umask``,
    or what a default ACL of the folder says). A umask that leaves the owner without read or write
    (e.g. ``0o222``) is honoured too: the owner may write while the file is being written, the mode
    is set at :meth:`commit`.
    """

    def __init__(self, path: str | os.PathLike, *, temp: str | os.PathLike | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if temp is not None:
            self.tmp = Path(temp)
            self.tmp.unlink(missing_ok=True)  # a leftover: created afresh, so the umask applies
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        else:
            fd = self._create_random()
        try:
            self.mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if self.mode & _OWNER_RW != _OWNER_RW:
                os.fchmod(fd, self.mode | _OWNER_RW)
        except BaseException:
            os.close(fd)
            self.discard()
            raise
        os.close(fd)
        self.committed = False

    def _create_random(self) -> int:
        for _ in range(100):
            self.tmp = self.path.with_name(f".{self.path.name}.{os.urandom(4).hex()}.tmp")
            try:
                return os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
        raise FileExistsError(f"no free temporary name beside {self.path}")  # pragma: no cover

    def commit(self) -> Path:
        """fsync the temporary file, give it its final mode, rename it over ``path``; returns ``path``."""
        fd = os.open(self.tmp, os.O_RDONLY)  # fsync works on a read-only descriptor
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(self.tmp, self.mode)
        os.replace(self.tmp, self.path)
        try:  # make the rename itself durable; not every file system allows fsync on a folder
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:  # pragma: no cover
            pass
        else:
            try:
                os.fsync(dir_fd)
            except OSError:  # pragma: no cover
                pass
            finally:
                os.close(dir_fd)
        self.committed = True
        return self.path

    def discard(self) -> None:
        """Remove the temporary file (if it is still there); ``path`` is left as it was."""
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :class:`AtomicFile`); returns the path."""
    target = AtomicFile(path)
    with target as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target.path


def progress(
    iterable: Iterable | None = None,
    *,
    enabled: bool = True,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
) -> Any:
    """A tqdm bar on stderr over ``iterable`` (or, without one, a bar to ``update()`` by hand).

    ``enabled=False`` gives a disabled bar: it iterates and accepts ``update()``, prints nothing.
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def progress_write(text: str) -> None:
    """Print a line on stderr without breaking a progress bar that is being drawn."""
    from tqdm.auto import tqdm

    tqdm.write(text, file=sys.stderr)
