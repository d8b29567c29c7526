"""What an account may do on this host, and target directories opened with those rights.

A root agent acting for another account judges the account's rights itself (see the
package's notes); every other agent lets the kernel judge. Target directories are held
open by descriptor so that the directory judged is the one written to.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable

from jobfleet.agent import credentials
from jobfleet.agent.accounts import (
    READ,
    SEARCH,
    WRITE,
    Account,
    AccountError,
    lookup_account,
    permits,
)
from jobfleet.domain.protocol import at_or_below
from jobfleet.domain.status import HostStatus

logger = logging.getLogger(__name__)


class TransferError(Exception):
    """A transfer failed; ``status`` is the host status to report (``HostStatus``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ServerRefused(TransferError):
    """The server answered a piece request with ``http_status`` instead of the bytes."""

    def __init__(self, http_status: int) -> None:
        super().__init__(HostStatus.GSE_FILE_ERROR, f"fetch failed: HTTP {http_status}")
        self.http_status = http_status

    @property
    def gone(self) -> bool:
        """The server says the file will not come (its source failed to send it): asking
        again is of no use."""
        return self.http_status == 410


class Rights:
    """What one account may do here, with the answers about directories remembered."""

    def __init__(self, account: Account) -> None:
        self.account = account
        # a root agent acting for another account must judge that account's rights
        self.judged = account.is_other
        self._root = os.geteuid() == 0
        self._searchable: dict[str, bool] = {}

    def may(self, path: str, st: os.stat_result, want: int) -> bool:
        """``want`` on ``path`` (whose stat is ``st``), the way there included."""
        if self.judged:
            return permits(self.account, st, want) and self.reachable(path)
        return self._root or os.access(path, _access_mode(want))

    def allows(self, path: str, st: os.stat_result, want: int) -> bool:
        """``want`` on ``path``, in a directory already known to be reachable."""
        if self.judged:
            return permits(self.account, st, want)
        return self._root or os.access(path, _access_mode(want))

    def reachable(self, path: str) -> bool:
        """Every directory above ``path`` is searchable, by its name and where it lives."""
        if not self.judged:
            return True
        parent = os.path.dirname(os.path.normpath(path))
        # where the path leads once every symlink in it, the last one too, is followed
        real = os.path.dirname(os.path.realpath(path))
        return all(self._search(d) for d in {*_lineage(parent), *_lineage(real)})

    def _search(self, directory: str) -> bool:
        known = self._searchable.get(directory)
        if known is None:
            try:
                known = permits(self.account, os.stat(directory), SEARCH)
            except OSError:
                known = False
            self._searchable[directory] = known
        return known


def _access_mode(want: int) -> int:
    mode = os.R_OK if want & READ else 0
    mode |= os.W_OK if want & WRITE else 0
    return mode | (os.X_OK if want & SEARCH else 0)


def _lineage(directory: str) -> list[str]:
    """``directory`` and every directory above it."""
    chain = [directory]
    while True:
        parent = os.path.dirname(directory)
        if parent == directory:
            return chain
        chain.append(parent)
        directory = parent


def account_for(name: str) -> Account:
    try:
        return lookup_account(name)
    except AccountError as exc:
        raise TransferError(HostStatus.GSE_USER_ERROR, str(exc)) from None


def assume(account: Account) -> None:
    """Give this transfer's own thread the account's file access (see ``credentials``)."""
    try:
        credentials.assume(account)
    except OSError as exc:
        raise TransferError(
            HostStatus.GSE_USER_ERROR, f"cannot act as account {account.name}: {exc}"
        ) from None


def absolute(dest: str) -> str:
    if not os.path.isabs(dest):
        raise TransferError(HostStatus.COPYFILE_FAILED, f"target path {dest} is not absolute")
    normal = os.path.normpath(dest)
    if normal == "/" or normal == "//":
        raise TransferError(HostStatus.COPYFILE_FAILED, "target path / names no file")
    return normal


def target_error(path: str, exc: OSError) -> TransferError:
    if isinstance(exc, PermissionError):
        return TransferError(HostStatus.COPYFILE_FAILED, f"{path}: permission denied")
    return TransferError(HostStatus.COPYFILE_FAILED, f"{path}: {exc.strerror or exc}")


def _umask() -> int:
    # reading the umask means setting it; set it straight back
    current = os.umask(0o022)
    os.umask(current)
    return current


class Dir:
    """An open directory on the target side.

    Checks and changes go through the descriptor (``*at`` calls), so the directory whose
    permissions were judged is the one written to, even if the account renames or
    swaps a path component for a symlink in between — otherwise a root agent could be
    steered into writing, as root, somewhere the account may not."""

    def __init__(self, path: str, fd: int, *, below: bool = False) -> None:
        self.path = path
        self.fd = fd
        # below the operator's target path: no symlink among the entries is followed
        self.below = below

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def entry(self, name: str, *, follow: bool) -> os.stat_result | None:
        """``name`` here, or None when absent; below the target path a symlink (dangling
        or not) is refused rather than followed."""
        if follow and self.below:
            st = self._stat(name, follow=False)
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise linked(os.path.join(self.path, name))
            return st
        return self._stat(name, follow=follow)

    def _stat(self, name: str, *, follow: bool) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=follow)
        except FileNotFoundError:
            return None  # absent, or a dangling symlink
        except OSError as exc:
            raise target_error(os.path.join(self.path, name), exc) from None

    def check_writable(self, rights: Rights, replacing: os.stat_result | None = None) -> None:
        """Refuse unless the account may create (and replace ``replacing``) entries here."""
        st = os.fstat(self.fd)
        account = rights.account
        allowed = rights.may(self.path, st, WRITE | SEARCH)
        if allowed and rights.judged and replacing is not None and st.st_mode & stat.S_ISVTX:
            # in a sticky directory (/tmp) only the file's or the directory's owner may replace
            allowed = account.uid in (replacing.st_uid, st.st_uid)
        if not allowed:
            raise TransferError(
                HostStatus.COPYFILE_FAILED,
                f"permission denied: account {account.name} cannot write to {self.path}",
            )

    def owner_for(self, rights: Rights) -> tuple[int, int] | None:
        """(uid, gid) a new entry here must get, or None to keep the agent's own."""
        if os.geteuid() != 0 or credentials.acting():
            # acting as the account, the kernel already makes new entries its own
            return None
        st = os.fstat(self.fd)
        # a set-group-ID directory hands its group to new entries, as it would for the user
        gid = st.st_gid if st.st_mode & stat.S_ISGID else rights.account.gid
        return rights.account.uid, gid

    def make_child(self, name: str, rights: Rights, mode: int) -> Dir:
        """The directory ``name`` in here, created for the account if absent."""
        path = os.path.join(self.path, name)
        inherited = os.fstat(self.fd).st_mode & stat.S_ISGID
        try:
            os.mkdir(name, 0o700, dir_fd=self.fd)
            created = True
        except FileExistsError:
            created = False  # made meanwhile, by another transfer perhaps
        except OSError as exc:
            raise target_error(path, exc) from None
        # fchown and fchmod need a readable descriptor; one just made is ours to read
        access = os.O_RDONLY if created else _dir_access()
        try:
            fd = os.open(name, _DIR_FLAGS | access | os.O_NOFOLLOW, dir_fd=self.fd)
        except OSError as exc:
            raise self._not_dir(name, exc) from None
        child = Dir(path, fd, below=self.below)
        if created:
            try:
                owner = self.owner_for(rights)
                if owner is not None:
                    os.fchown(fd, *owner)
                # as mkdir -p: a directory made in a set-group-ID directory keeps the bit
                # it inherited, which is what makes its files the group's too
                os.fchmod(fd, mode | inherited)
            except OSError as exc:
                child.close()
                raise target_error(path, exc) from None
        return child

    def open_child(self, name: str, rights: Rights, create: bool, missing: str) -> Dir:
        """The directory ``name`` in here, never through a symlink; created for the account
        when absent and ``create`` allows, else the error names ``missing``."""
        path = os.path.join(self.path, name)
        try:
            fd = os.open(name, _dir_access() | _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=self.fd)
            return Dir(path, fd, below=self.below)
        except FileNotFoundError:
            if not create:
                raise TransferError(
                    HostStatus.COPYFILE_FAILED, f"target directory {missing} does not exist"
                ) from None
        except OSError as exc:
            raise self._not_dir(name, exc) from None
        self.check_writable(rights)
        return self.make_child(name, rights, 0o755 & ~_umask())

    def _not_dir(self, name: str, exc: OSError) -> TransferError:
        path = os.path.join(self.path, name)
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            return target_error(path, exc)
        st = self.entry(name, follow=False)
        if st is not None and stat.S_ISLNK(st.st_mode):
            return linked(path)
        return TransferError(
            HostStatus.COPYFILE_FAILED, f"target {path} exists and is not a directory"
        )

    def fsync(self) -> None:
        try:
            fd = os.open(".", os.O_RDONLY | _DIR_FLAGS, dir_fd=self.fd)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            # some filesystems refuse fsync on a directory; the file itself is safe
            logger.debug("directory fsync failed dir=%s error=%s", self.path, exc)
        finally:
            os.close(fd)


_DIR_FLAGS = os.O_DIRECTORY | os.O_CLOEXEC


def _dir_access() -> int:
    # O_PATH opens a directory the agent may write to but not list; root lists anything
    # and needs a readable descriptor for fchown and fchmod
    # (a root agent acting as an account has only the account's rights to read)
    full = os.geteuid() == 0 and not credentials.acting()
    return os.O_RDONLY if full else getattr(os, "O_PATH", os.O_RDONLY)


def _open_dir(path: str) -> int:
    return os.open(path, _dir_access() | _DIR_FLAGS)


def linked(path: str) -> TransferError:
    return TransferError(
        HostStatus.COPYFILE_FAILED,
        f"target {path} is a symbolic link: no symbolic link below the target path is followed",
    )


def below_root(root: str | None, dest: str) -> tuple[str, list[str]] | None:
    """The operator's target path ``root``, normal, and the names of ``dest`` (absolute
    and normal) below it; None when the whole of ``dest`` is the operator's (``dest`` is
    the root, or a server of an earlier release named no root)."""
    if root is None:
        return None
    if not os.path.isabs(root):
        raise TransferError(HostStatus.COPYFILE_FAILED, f"target path {root} is not absolute")
    root = os.path.normpath(root)
    if dest == root:
        return None
    if not at_or_below(dest, root):
        raise TransferError(
            HostStatus.COPYFILE_FAILED, f"target {dest} is not below the target path {root}"
        )
    return root, dest[len(root.rstrip("/")) + 1 :].split("/")


def open_parent(dest: str, rights: Rights, create_dirs: bool, root: str | None = None) -> Dir:
    """The directory ``dest`` goes in, created first when ``create_dirs`` allows.

    The operator's target path ``root`` is followed as given, symlinks and all; every
    directory below it, named after the source's entries, is opened one name at a time
    from the one above and never through a symlink (``Dir.entry`` refuses the last
    name's). Otherwise a local user of the target who may write in the target directory
    could plant ``sub -> /etc`` and have the copy of ``sub/x`` written to ``/etc/x``,
    as root."""
    walk = below_root(root, dest)
    if walk is None:
        return _open_followed(os.path.dirname(dest), rights, create_dirs)
    top, names = walk
    parent = os.path.dirname(dest)
    current = _open_followed(top, rights, create_dirs, missing=parent, below=True)
    return _descend(
        current, names[:-1], lambda here, name: here.open_child(name, rights, create_dirs, parent)
    )


def _descend(current: Dir, names: list[str], step: Callable[[Dir, str], Dir]) -> Dir:
    """The directory ``names`` lead to from ``current``, each ``step`` taken from the one
    above; every directory passed through is closed, and ``current`` too on a failure."""
    try:
        for name in names:
            child = step(current, name)
            current.close()
            current = child
    except BaseException:
        current.close()
        raise
    return current


def _open_followed(
    parent: str,
    rights: Rights,
    create_dirs: bool,
    missing: str | None = None,
    *,
    below: bool = False,
) -> Dir:
    """The directory ``parent``, every symlink on the way followed; ``missing`` is the
    directory a strict transfer names when it is absent; ``below``: the entries of the
    directory are below the target path."""
    missing = parent if missing is None else missing
    try:
        return Dir(parent, _open_dir(parent), below=below)
    except FileNotFoundError:
        if not create_dirs:
            raise TransferError(
                HostStatus.COPYFILE_FAILED, f"target directory {missing} does not exist"
            ) from None
    except NotADirectoryError:
        raise TransferError(
            HostStatus.COPYFILE_FAILED, f"target directory {parent} is not a directory"
        ) from None
    except OSError as exc:
        raise target_error(parent, exc) from None
    return _make_parents(parent, rights, below)


def _make_parents(directory: str, rights: Rights, below: bool) -> Dir:
    missing: list[str] = []
    path = directory
    while True:
        try:
            current = Dir(path, _open_dir(path))
            break
        except FileNotFoundError:
            missing.append(os.path.basename(path))
            path = os.path.dirname(path)
        except NotADirectoryError:
            raise TransferError(
                HostStatus.COPYFILE_FAILED, f"target directory {directory} is not a directory"
            ) from None
        except OSError as exc:
            raise target_error(path, exc) from None
    mode = 0o755 & ~_umask()

    def make(here: Dir, name: str) -> Dir:
        here.check_writable(rights)
        return here.make_child(name, rights, mode)

    made = _descend(current, list(reversed(missing)), make)
    # only the directory made last is the target path; those above it are not below it
    made.below = below
    return made
