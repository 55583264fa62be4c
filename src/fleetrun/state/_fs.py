"""Opening files safely: the private state directory, and files the user asks for.

The state directory holds what a run did, including log tails and published
values that may be secrets, so it is the owner's alone (as OpenSSH treats
``~/.ssh``): directories 0700, files 0600, whatever the umask. It is refused
when another user owns it or when others can write to it, because whoever can
write there can plant a symbolic link that redirects fleetrun's next write.

Inside it, nothing is opened through a symbolic link: directories are walked
with directory file descriptors and ``O_NOFOLLOW``, files are opened with
``O_NOFOLLOW`` relative to them, and a file that must be new is created with
``O_EXCL``. SQLite opens ``state.db`` itself, so ``connect`` checks with
``lstat`` first (``check_not_links``).

Files the user names (``-o``, ``--events``) are meant to be shared: they follow
the umask, are never opened through a link, and their directory must exist
(one rule for every such file: a missing directory is a usage error).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from fleetrun.errors import StateDirError, UsageError

DIR_MODE = 0o700
"""Mode of every directory inside the state directory (and of the state directory)."""

FILE_MODE = 0o600
"""Mode of every file inside the state directory."""

MIN_FREE_ENV = "FLEETRUN_MIN_FREE_MB"
"""Environment variable overriding ``DEFAULT_MIN_FREE_MB`` (0 turns the check off)."""

DEFAULT_MIN_FREE_MB = 16
"""Free space (MiB) the state directory's filesystem needs before a run starts."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _what_to_do(path: Path) -> str:
    return f"choose another state directory with --state-dir (now {path})"


def prepare_state_dir(path: Path) -> None:
    """Create the state directory (0700) if needed, and check that it is safe.

    Raises ``StateDirError`` (exit 2) naming the directory and ``--state-dir``
    when it cannot be created or is not safe.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # the user's own tree: umask
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)
    except OSError as e:
        raise StateDirError(
            f"cannot create the state directory {path}: {e.strerror or e}; "
            f"make it writable or {_what_to_do(path)}"
        ) from None
    check_state_dir(path)


def check_state_dir(path: Path) -> None:
    """Refuse a state directory owned by another user or writable by others;
    tighten one that others can only read (left by an older fleetrun) to 0700."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise StateDirError(
            f"cannot use the state directory {path}: {e.strerror or e}; {_what_to_do(path)}"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"the state directory {path} is not a directory; {_what_to_do(path)}")
    if st.st_uid != os.geteuid():
        raise StateDirError(
            f"refusing the state directory {path}: it belongs to uid {st.st_uid}, not to you "
            f"(uid {os.geteuid()}); {_what_to_do(path)}"
        )
    if st.st_mode & 0o022:
        raise StateDirError(
            f"refusing the state directory {path}: others can write to it (mode "
            f"{stat.S_IMODE(st.st_mode):04o}), so they could redirect what fleetrun writes; "
            f"run `chmod 700 {path}` or {_what_to_do(path)}"
        )
    if st.st_mode & 0o077:
        with contextlib.suppress(OSError):  # a read-only filesystem: reading still works
            os.chmod(path, DIR_MODE)


def check_free_space(path: Path) -> None:
    """Refuse to start a run when the state directory's filesystem has less than
    ``$FLEETRUN_MIN_FREE_MB`` (default 16) MiB free."""
    raw = os.environ.get(MIN_FREE_ENV, "")
    try:
        need_mb = float(raw) if raw.strip() else float(DEFAULT_MIN_FREE_MB)
    except ValueError:
        raise UsageError(f"{MIN_FREE_ENV}={raw!r} is not a number of MiB") from None
    if need_mb <= 0:
        return
    try:
        st = os.statvfs(path)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if free < need_mb * 2**20:
        raise StateDirError(
            f"only {free / 2**20:.1f} MiB free for the state directory {path} (a run needs "
            f"{need_mb:g} MiB to be recorded): free some space, {_what_to_do(path)}, "
            f"or lower {MIN_FREE_ENV}"
        )


@contextlib.contextmanager
def dir_fd(path: Path) -> Iterator[int]:
    """A file descriptor of directory ``path``, which must not be a symbolic link."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as e:
        raise _refusal(path, e) from None
    try:
        yield fd
    finally:
        os.close(fd)


def private_dirs(root: Path, *parts: str, new: bool = False) -> Path:
    """Create ``root/parts...`` (each 0700) without following a link; return the path.

    ``new``: the last part must not exist yet (a run's own directory).
    """
    current = root
    with dir_fd(root) as top:
        fd = os.dup(top)
        try:
            for i, part in enumerate(parts):
                current = current / part
                last = i == len(parts) - 1
                try:
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
                except FileExistsError:
                    if new and last:
                        raise StateDirError(f"{current} exists already; it must be new") from None
                except OSError as e:
                    raise _refusal(current, e) from None
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    raise _refusal(current, e) from None
                os.close(fd)
                fd = child
        finally:
            os.close(fd)
    return current


def open_private(path: Path, flags: int, *, new: bool = False) -> int:
    """Open file ``path`` inside the state directory: never through a link, 0600
    when created, ``O_EXCL`` when ``new``. Returns a descriptor (close-on-exec)."""
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if new else 0)
    with dir_fd(path.parent) as parent:
        try:
            return os.open(path.name, flags, FILE_MODE, dir_fd=parent)
        except OSError as e:
            raise _refusal(path, e) from None


def check_not_links(*paths: Path) -> None:
    """Raise ``StateDirError`` when one of ``paths`` is a symbolic link (absent is fine)."""
    for p in paths:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise _refusal(p, e) from None
        if stat.S_ISLNK(st.st_mode):
            raise StateDirError(
                f"refusing {p}: it is a symbolic link, and fleetrun never writes through one "
                "inside the state directory; remove it"
            )


def make_private(*paths: Path) -> None:
    """Tighten existing files to 0600 (left wider by an older fleetrun, or
    created by a task's shell under its umask)."""
    for p in paths:
        with contextlib.suppress(OSError):
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
                os.chmod(p, FILE_MODE)


def tighten_tree(root: Path) -> None:
    """Make every directory (0700) and regular file (0600) under ``root`` owner-only;
    links are neither followed nor changed."""
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            with contextlib.suppress(OSError):
                p = os.path.join(dirpath, d)
                st = os.lstat(p)
                if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) != DIR_MODE:
                    os.chmod(p, DIR_MODE)
        make_private(*(Path(dirpath, f) for f in filenames))


def tree_size(root: Path) -> int:
    """Bytes of the regular files under ``root`` (links not followed); 0 if absent."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, f))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def _refusal(path: Path, e: OSError) -> StateDirError:
    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return StateDirError(
            f"refusing {path}: it is a symbolic link (or not a directory where one belongs), "
            "and fleetrun never writes through one inside the state directory; remove it"
        )
    return StateDirError(f"cannot use {path}: {e.strerror or e}; {_what_to_do(path)}")


# -- files the user asks for -----------------------------------------------------


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _user_parent(path: Path) -> Path:
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(
            f"cannot write {path}: the directory {parent} does not exist; create it first"
        )
    return parent


def open_user_file(path: Path) -> TextIO:
    """Open a file the user asked for (``--events``) for writing: truncated, mode
    per the umask, never through a symbolic link, in a directory that exists."""
    _user_parent(path)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        why = "it is a symbolic link" if e.errno == errno.ELOOP else e.strerror
        raise UsageError(f"cannot write {path}: {why}") from None
    return os.fdopen(fd, "w", encoding="utf-8", newline="\n")


def write_atomic(path: Path, text: str) -> None:
    """Replace the file ``path`` with ``text`` atomically (readers see the old file
    or the new one, never a part); mode per the umask.

    The directory must exist (``UsageError`` otherwise, as for ``--events``). A
    symbolic link at ``path`` is replaced, never written through. Two writers at
    once: the last rename wins, whole.
    """
    parent = _user_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
