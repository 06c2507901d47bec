"""Output safety: every file or folder awq-tts writes goes through here.

What is promised, and how:

* **Nothing half-written.** Work goes into a sibling ``.NAME.PID.partial`` and is renamed
  into place only when complete; an exception, Ctrl-C or (in the CLI) SIGTERM / SIGHUP
  removes it on the way out. A killed run (SIGKILL, power loss) leaves only that
  sibling, and the next run for the same output removes it (and any ``.NAME.PID.old``).
* **Nothing lost.** An exclusive lock (``flock`` on ``.NAME.lock``, removed at the end)
  is held on the output for the whole run, so a second run to the same output fails at
  once with one line. An output that exists is replaced only with ``force``; one that
  appeared after the run started (written by something else) is never replaced without
  ``force``: the finished result is kept next to it and the error says where.
* **No surprises at the end.** Before any work: the output may not lie inside an input
  folder, nor an input inside it; its parent must be writable (and a folder must not
  stand where a file goes); the disk must have room for the expected size.
* **Ordinary permissions.** Folders and files are created with the user's umask, like
  every other tool (not 0700/0600 temporary-file modes).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from .errors import UsageError

#: Headroom asked of the disk on top of the expected output size.
SPACE_MARGIN = 1.05


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_placement(target: Path, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse an output inside an input folder, or an input inside the output."""
    out = target.resolve()
    for given in inputs:
        path = Path(given)
        if not path.exists():
            continue
        src = path.resolve()
        if _within(out, src) and src.is_dir():
            raise UsageError(f"output {target} lies inside the input {given}; write it "
                             f"somewhere outside that folder")
        if _within(src, out):
            raise UsageError(f"input {given} lies inside the output {target}; choose an "
                             f"output that does not contain the input")


def check_writable(target: Path, expected_bytes: int = 0, folder: bool = True) -> None:
    """Create the parent, and refuse an unwritable place or a disk without room."""
    parent = target.parent
    if not folder and target.is_dir():
        raise UsageError(f"{target} is a folder; give a file name for this output")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {parent}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {parent}: permission denied (read-only?)")
    free = shutil.disk_usage(parent).free
    if expected_bytes and free < expected_bytes * SPACE_MARGIN:
        raise UsageError(f"not enough space for {target}: it needs about "
                         f"{expected_bytes / 2**30:.2f} GiB and {parent} has "
                         f"{free / 2**30:.2f} GiB free")


@contextlib.contextmanager
def output_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``target`` for the block; a second holder fails at once."""
    lock = target.with_name(f".{target.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UsageError(f"another awq-tts run is writing {target}; wait for it to "
                                 f"finish or choose another output") from None
            raise
        try:  # the file we locked must still be the one at that path (see unlink below)
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        os.close(fd)


def remove_debris(target: Path) -> list[Path]:
    """Remove what killed runs left for ``target`` (call with the lock held)."""
    removed = []
    for pattern in (f".{target.name}.*.partial", f".{target.name}.*.old"):
        for path in target.parent.glob(pattern):
            _remove(path)
            removed.append(path)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(root: Path) -> None:
    """Give ``root`` (and all below it) the modes a plain ``open``/``mkdir`` would have.

    Some writers create private files (safetensors saves 0600; ``mkdtemp`` makes 0700);
    an output meant for a serving process or another user must not stay private.
    """
    mask = _umask()
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        if path.is_symlink():
            continue
        mode = 0o777 if path.is_dir() else 0o666 | (path.stat().st_mode & 0o111)
        os.chmod(path, mode & ~mask)


def _install(tmp: Path, target: Path, force: bool, existed: bool) -> None:
    """Rename the finished ``tmp`` into ``target``, replacing it only when allowed."""
    apply_umask(tmp)
    if target.exists() or target.is_symlink():
        if not force:
            kept = target.with_name(f"{target.name}.awq-tts-{os.getpid()}")
            tmp.rename(kept)
            appeared = "appeared while this run was working" if not existed else "exists"
            raise UsageError(f"{target} {appeared}; it was not replaced (no --force). "
                             f"The finished result is at {kept}")
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        target.rename(old)
        tmp.rename(target)
        _remove(old)
    else:
        tmp.rename(target)


def _start(target: Path, force: bool, inputs: Sequence[str | Path], expected_bytes: int,
           folder: bool) -> bool:
    if (target.exists() or target.is_symlink()) and not force:
        raise UsageError(f"{target} already exists; pass --force to replace it")
    check_placement(target, inputs)
    check_writable(target, expected_bytes, folder)
    return target.exists()


@contextlib.contextmanager
def _atomic(target: Path, force: bool, inputs: Sequence[str | Path], expected_bytes: int,
            folder: bool) -> Iterator[Path]:
    existed = _start(target, force, inputs, expected_bytes, folder)
    with output_lock(target):
        remove_debris(target)
        suffix = "" if folder else target.suffix   # writers infer formats from suffixes
        tmp = target.with_name(f".{target.name}.{os.getpid()}.partial{suffix}")
        if folder:
            tmp.mkdir()
        try:
            yield tmp
            _install(tmp, target, force, existed)
        except BaseException:
            _remove(tmp)
            raise


def atomic_output_dir(target: str | Path, force: bool = False,
                      inputs: Sequence[str | Path] = (),
                      expected_bytes: int = 0) -> AbstractContextManager[Path]:
    """Yield an empty folder that becomes ``target`` when the block succeeds (see module)."""
    return _atomic(Path(target), force, inputs, expected_bytes, folder=True)


def atomic_output_file(target: str | Path, force: bool = True,
                       inputs: Sequence[str | Path] = ()) -> AbstractContextManager[Path]:
    """Yield a temporary path whose file becomes ``target`` when the block succeeds."""
    return _atomic(Path(target), force, inputs, 0, folder=False)
