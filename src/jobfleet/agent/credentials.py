"""File access as another account, in one thread, checked by the kernel.

A root agent that lists, reads or writes files for an ordinary account gives the
thread doing it that account's file-system identity (fsuid, fsgid and supplementary
groups). Linux keeps these per thread and drops root's file capabilities while the
fsuid is not 0, so every path lookup — each directory searched, each symlink
followed, in the middle of a path or at its end, ``..`` included — is judged as the
account would be judged, ACLs and ``protected_symlinks`` too, and without a race
between a check and the use.

glibc broadcasts ``setgroups`` to every thread of the process, so the groups are set
with the raw system call, whose number depends on the architecture. Where it is not
known, :func:`supported` is False and callers keep to their own permission checks.

A thread that took an account keeps it: only threads made for one job may take one.
"""

from __future__ import annotations

import functools
import logging
import platform
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from jobfleet.agent.accounts import Account

if TYPE_CHECKING:
    import ctypes

logger = logging.getLogger(__name__)

T = TypeVar("T")

# setgroups per machine (asm/unistd.h); setfsuid and setfsgid have thread-local wrappers
_SETGROUPS = {"x86_64": 116, "amd64": 116, "aarch64": 159, "arm64": 159}
_UNCHANGED = 0xFFFFFFFF

_local = threading.local()


class CredentialError(OSError):
    """The thread could not take the account's identity."""


# ctypes is loaded with the first job that acts for another account: an idle agent
# does not pay for it
@functools.cache
def _libc() -> ctypes.CDLL | None:
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def supported() -> bool:
    libc = _libc()
    return (
        libc is not None
        and platform.machine().lower() in _SETGROUPS
        and hasattr(libc, "setfsuid")
        and hasattr(libc, "syscall")
    )


def acting() -> bool:
    """Whether the calling thread has taken another account's identity."""
    return getattr(_local, "uid", None) is not None


def assume(account: Account) -> bool:
    """Give the calling thread ``account``'s file access for the rest of its life.

    True when done, False when not needed (the agent is that account, or root acts as
    root) or not supported here. Raises :class:`CredentialError` on failure.
    """
    if not account.is_other or not supported():
        return False
    if getattr(_local, "uid", None) == account.uid:
        return True
    if acting():
        raise CredentialError("this thread already acts for another account")
    import ctypes

    libc = _libc()
    assert libc is not None
    groups = sorted(account.groups) or [account.gid]
    array = (ctypes.c_uint * len(groups))(*groups)
    number = _SETGROUPS[platform.machine().lower()]
    if libc.syscall(ctypes.c_long(number), ctypes.c_long(len(groups)), array) != 0:
        raise CredentialError(ctypes.get_errno(), "setgroups failed")
    libc.setfsgid(ctypes.c_uint(account.gid))
    libc.setfsuid(ctypes.c_uint(account.uid))
    # both calls answer the previous id and report no error: read them back
    fsgid = libc.setfsgid(ctypes.c_uint(_UNCHANGED))
    fsuid = libc.setfsuid(ctypes.c_uint(_UNCHANGED))
    if (fsuid, fsgid) != (account.uid, account.gid):
        raise CredentialError(f"could not take the identity of {account.name}")
    _local.uid = account.uid
    return True


def run_as(account: Account, work: Callable[[], T]) -> T:
    """``work()`` in a thread of its own that has ``account``'s file access.

    Blocking. Without the need or the support, ``work`` runs in the calling thread.
    """
    if not account.is_other or not supported():
        return work()
    answer: queue.SimpleQueue[tuple[bool, object]] = queue.SimpleQueue()

    def main() -> None:
        try:
            assume(account)
            answer.put((True, work()))
        except BaseException as exc:  # handed to the caller's thread
            answer.put((False, exc))

    thread = threading.Thread(target=main, name=f"jobfleet-as-{account.name}", daemon=True)
    thread.start()
    ok, value = answer.get()
    thread.join()
    if ok:
        return value  # type: ignore[return-value]
    assert isinstance(value, BaseException)
    raise value
