"""The one way divcolor writes a file: :func:`atomic_write` (and :func:`atomic_path` under it).

Photos, model files, strokes and projects all go through here, so every output has the same
guarantees instead of five slightly different ones:

* **Whole or not at all.** Bytes go to a temporary file in the target's folder, are flushed and
  fsynced, and only then renamed over the target in one step (``os.replace``). A process killed
  at any moment leaves either the old file or the complete new one, never a truncated one.
* **An existing file is replaced only by a complete one**, and keeps its permissions; a new
  file gets what a plain ``open(path, "w")`` would have given it (the umask), not mkstemp's 0600.
* **No litter.** The temporary is named ``.<target name>.<pid>.<random>.divcolor-part``: hidden,
  recognisable, and tied to the process writing it. A temporary left behind by a writer that was
  killed (its process no longer exists, or it is a day old) is deleted by the next write to the
  same target; a live writer's temporary is never touched.
* **Errors name the output.** A failure while writing (disk full, permission denied) is raised
  as the same kind of ``OSError`` with the *target's* path, since the temporary's name means
  nothing to a user.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Union

__all__ = ["TEMP_SUFFIX", "atomic_path", "atomic_write", "current_umask", "stale_temps", "sweep_unfinished"]

TEMP_SUFFIX = ".divcolor-part"
STALE_SECONDS = 24 * 3600
"""A temporary this old is swept even if its process id exists again (ids are reused)."""

Writer = Callable[[BinaryIO], None]
Content = Union[bytes, bytearray, memoryview, str, Writer]


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back): files written
    through a temporary file + rename get the mode a plain ``open(…, "w")`` would have given."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_pattern(dest: Path) -> re.Pattern[str]:
    return re.compile(re.escape(f".{dest.name}.") + r"(\d+)\.[0-9a-f]+" + re.escape(TEMP_SUFFIX) + "$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # no cheap check: rely on age alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def stale_temps(dest: str | os.PathLike[str]) -> list[Path]:
    """Temporaries of earlier writes to ``dest`` whose writer is gone (killed, crashed)."""
    dest = Path(dest)
    pattern = _temp_pattern(dest)
    found: list[Path] = []
    try:
        entries = list(os.scandir(dest.parent))
    except OSError:
        return found
    now = time.time()
    for e in entries:
        m = pattern.match(e.name)
        if m is None:
            continue
        try:
            old = now - e.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
        except OSError:
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and (old or not _alive(pid)):
            found.append(Path(e.path))
    return found


def _sweep(dest: Path) -> int:
    removed = 0
    for p in stale_temps(dest):
        with contextlib.suppress(OSError):
            p.unlink()
            removed += 1
    return removed


_ANY_TEMP = re.compile(r"^\.(?P<target>.+)\.\d+\.[0-9a-f]+" + re.escape(TEMP_SUFFIX) + "$")


def sweep_unfinished(folder: str | os.PathLike[str]) -> int:
    """Remove what earlier writers that were killed left half-written in ``folder`` (their
    temporaries, whatever the target); returns how many went. A live writer's are never touched.

    A write sweeps only its own target's temporaries, so a run or an export killed while
    writing ``a.png`` would leave its part file until ``a.png`` is written again; the CLI calls
    this on its output folder and the app on its export folder, so nothing of theirs stays."""
    folder = Path(folder).expanduser()
    try:
        names = [e.name for e in os.scandir(folder)]
    except OSError:
        return 0
    targets = {m.group("target") for m in map(_ANY_TEMP.match, names) if m}
    return sum(_sweep(folder / target) for target in targets)


def _final_mode(dest: Path) -> int:
    """Permissions for the finished file: the old file's, else what open() would have given."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(dest.stat().st_mode)
    return 0o666 & ~current_umask()


def _renamed_error(exc: OSError, dest: Path, tmp: Path) -> OSError:
    """The same kind of OSError, about ``dest`` instead of the temporary file."""
    if exc.errno is not None:
        new = type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), os.fspath(dest))
    else:
        text = str(exc).replace(os.fspath(tmp), os.fspath(dest)).replace(tmp.name, dest.name)
        new = type(exc)(f"{text} (writing {dest})") if type(exc) is OSError else OSError(f"{text} (writing {dest})")
    return new


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], *, make_dirs: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; when the block ends without an exception the
    file there is fsynced and renamed over ``dest``, otherwise it is deleted.

    For writers that insist on a file name (safetensors, some encoders); everything else should
    use :func:`atomic_write`.
    """
    dest = Path(dest).expanduser()
    if make_dirs:
        dest.parent.mkdir(parents=True, exist_ok=True)
    _sweep(dest)
    mode = _final_mode(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
            os.close(fd)
            yield tmp
            with open(tmp, "rb+") as fh:  # the writer may have used its own handle: sync the file
                os.fsync(fh.fileno())
            with contextlib.suppress(OSError):
                os.chmod(tmp, mode)
            os.replace(tmp, dest)
        except OSError as exc:
            if exc.filename is not None and Path(exc.filename) == dest:
                raise
            raise _renamed_error(exc, dest, tmp) from exc
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()
    _sync_dir(dest.parent)


def _sync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); best effort, some file systems refuse."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno not in (_errno.EINVAL, _errno.EBADF, _errno.EROFS):
                raise
        finally:
            os.close(fd)


def atomic_write(
    dest: str | os.PathLike[str], content: Content, *, encoding: str = "utf-8", make_dirs: bool = True
) -> Path:
    """Write ``content`` to ``dest`` so that it appears whole or not at all; returns ``dest``.

    ``content`` is bytes, text (encoded with ``encoding``) or a function that writes to the
    binary file object it is given. See the module docstring for the guarantees.
    """
    dest = Path(dest).expanduser()
    with atomic_path(dest, make_dirs=make_dirs) as tmp:
        with open(tmp, "wb") as fh:
            if isinstance(content, str):
                fh.write(content.encode(encoding))
            elif isinstance(content, (bytes, bytearray, memoryview)):
                fh.write(content)
            else:
                content(fh)
            fh.flush()
    return dest
