"""The OS account a task runs or a file moves as, and what that account may touch.

A root agent acts for any account on the host; an agent running as an ordinary user
acts only as itself. Both the executor and file transfer resolve accounts here so the
rule is written once.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass, field
from typing import Any

from jobfleet.agent.interpreters import DEFAULT_PATH
from jobfleet.domain.status import HostStatus

_FALLBACK_CWD = "/tmp"  # noqa: S108 - only a working directory, nothing is created there

READ = 4
WRITE = 2
SEARCH = 1
# what of the agent's own environment a task sees (never the rest: its enrollment token)
PASSED_ENV = ("LANG", "LC_ALL", "TMPDIR")


class AccountError(Exception):
    """The account does not exist, or this agent cannot act as it."""

    status = HostStatus.GSE_USER_ERROR


@dataclass(frozen=True)
class Account:
    name: str
    home: str
    shell: str
    cwd: str
    # Popen arguments that switch user; empty when the agent already is that user
    switch: dict[str, Any] = field(default_factory=dict)
    uid: int = -1
    gid: int = -1
    groups: frozenset[int] = frozenset()

    @property
    def owner(self) -> tuple[int, int] | None:
        if not self.switch:
            return None
        return int(self.switch["user"]), int(self.switch["group"])

    @property
    def is_other(self) -> bool:
        """The agent acts for this account with more rights than the account has."""
        return bool(self.switch) and self.uid != 0


def lookup_account(name: str) -> Account:
    euid = os.geteuid()
    if euid == 0:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise AccountError(
                f"jobfleet-agent: account {name!r} does not exist on this host"
            ) from None
    else:
        entry = pwd.getpwuid(euid)
        if name != entry.pw_name:
            raise AccountError(
                f"jobfleet-agent: the agent runs as {entry.pw_name} and cannot switch to {name}"
            )
    group_list = os.getgrouplist(entry.pw_name, entry.pw_gid)
    switch: dict[str, Any] = {}
    if entry.pw_uid != euid:
        switch = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": group_list}
    home = entry.pw_dir
    return Account(
        name=entry.pw_name,
        home=home,
        shell=entry.pw_shell,
        cwd=home if home and os.path.isdir(home) else _FALLBACK_CWD,
        switch=switch,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        groups=frozenset(group_list),
    )


def permits(account: Account, st: os.stat_result, want: int) -> bool:
    """Whether the classic permission bits of ``st`` grant ``account`` all of ``want``.

    The kernel's rule: the owner class alone applies to the owner, the group class to
    members, the other class to everyone else, even when a later class grants more.
    POSIX ACLs and capabilities other than root's are not consulted.
    """
    if account.uid == 0:
        # root searches and reads anything; it executes only what has some x bit
        return not (want & SEARCH and not stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o111)
    mode = st.st_mode
    if st.st_uid == account.uid:
        bits = (mode >> 6) & 7
    elif st.st_gid in account.groups:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def base_environment() -> dict[str, str]:
    """The agent's ``PATH`` and locale: all of its environment a task starts with."""
    env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH}
    env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
    return env


def account_environment(account: Account) -> dict[str, str]:
    """The login variables of ``account``, as a session of that user has them."""
    return {
        "HOME": account.home,
        "USER": account.name,
        "LOGNAME": account.name,
        "SHELL": account.shell,
    }
