"""Putting a task's script and variables file where its interpreter and account find them."""

from __future__ import annotations

import contextlib
import os
import shlex
from pathlib import Path

from jobfleet.agent.accounts import Account as _Account
from jobfleet.agent.processes import safe_name
from jobfleet.agent.task import TaskSpec
from jobfleet.domain.status import ScriptLanguage


# shutil and tempfile (0.5 MiB with bz2 and lzma) load with the first task that needs a
# directory, not in every idle agent
def _mkdtemp(prefix: str, work_dir: Path) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, dir=work_dir)


def _rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


MAX_VARS_BYTES = 1024 * 1024


# --- script staging -----------------------------------------------------------------


def fd_dir() -> str | None:
    """Where a child opens an inherited descriptor by path, if in-memory scripts work here."""
    if not hasattr(os, "memfd_create"):
        return None
    for path in ("/dev/fd", "/proc/self/fd"):
        if os.path.isdir(path):
            return path
    return None


class Script:
    """A script staged for one run: the path the interpreter opens, and what to clean up."""

    def __init__(self, path: str, fd: int | None = None, task_dir: str | None = None) -> None:
        self.path = path
        self.fd = fd
        self._task_dir = task_dir

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self.fd,) if self.fd is not None else ()

    def close_fd(self) -> None:
        """Drop the parent's copy of an in-memory script once the child holds it."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def discard(self) -> None:
        self.close_fd()
        if self._task_dir is not None:
            _remove_task_dir(self._task_dir, self.path)
            self._task_dir = None


def script_args(spec: TaskSpec) -> list[str]:
    """What follows the script on its command line.

    A sensitive parameter never does: every account may read any process's command
    line (``ps``). A shell script gets it as its positional parameters, set by a first
    line of the staged script; other languages read it from ``JOBFLEET_SCRIPT_PARAMS``
    (only the account and root can read a process's environment).
    """
    return [] if spec.sensitive_args else spec.args


def staged_text(spec: TaskSpec) -> str:
    """The script as staged for the interpreter."""
    if spec.sensitive_args and spec.lang == ScriptLanguage.SHELL:
        return f"set -- {shlex.join(spec.args)}\n{spec.script}"
    return spec.script


def staged_bytes(spec: TaskSpec) -> bytes:
    """The file the interpreter reads: the script's bytes exactly as the caller sent them
    (``spec.script`` keeps bytes that are not UTF-8 as lone surrogates)."""
    return staged_text(spec).encode("utf-8", errors="surrogateescape")


def script_in_memory(spec: TaskSpec, ext: str, fd_dir: str) -> Script:
    # close-on-exec here; pass_fds makes it inheritable in this task's child only
    fd = os.memfd_create("script" + ext, os.MFD_CLOEXEC)
    try:
        write_all(fd, staged_bytes(spec))
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return Script(f"{fd_dir}/{fd}", fd=fd)


def script_file(spec: TaskSpec, account: _Account, ext: str, work_dir: Path) -> Script:
    task_dir = _mkdtemp(safe_name(spec.id) + ".", work_dir)
    path = os.path.join(task_dir, "script" + ext)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
        try:
            write_all(fd, staged_bytes(spec))
            if account.owner is not None:
                os.fchown(fd, *account.owner)
        finally:
            os.close(fd)
        if account.owner is not None:
            os.chown(task_dir, *account.owner)
    except OSError:
        _remove_task_dir(task_dir, path)
        raise
    return Script(path, task_dir=task_dir)


class VarsFile:
    """A file the script may write variables to, readable by the account it runs as."""

    def __init__(self, path: str, task_dir: str) -> None:
        self.path = path
        self._task_dir = task_dir

    @classmethod
    def create(cls, spec: TaskSpec, account: _Account, work_dir: Path) -> VarsFile:
        task_dir = _mkdtemp(safe_name(spec.id) + ".vars.", work_dir)
        path = os.path.join(task_dir, "vars")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                if account.owner is not None:
                    os.fchown(fd, *account.owner)
            finally:
                os.close(fd)
            if account.owner is not None:
                os.chown(task_dir, *account.owner)
        except OSError:
            _rmtree(task_dir)
            raise
        return cls(path, task_dir)

    def read(self) -> str:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return ""
        try:
            data = os.read(fd, MAX_VARS_BYTES)
        finally:
            os.close(fd)
        return data.decode(errors="replace")

    def discard(self) -> None:
        _rmtree(self._task_dir)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove_task_dir(task_dir: str, script: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(script)
    try:
        os.rmdir(task_dir)
    except FileNotFoundError:
        pass
    except OSError:
        # the script left files beside itself
        _rmtree(task_dir)
