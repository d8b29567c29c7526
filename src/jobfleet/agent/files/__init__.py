"""The host side of a file transfer: listing sources, and streaming bytes through the server.

A file step moves data source agent → server → target agent over HTTP. The source
agent lists what the step's patterns name (:func:`expand_sources`) and streams each
file's bytes to the server (:func:`upload`); every target agent streams them back into
place (:func:`download`) and recreates directory entries (:func:`make_dir`). The
connection code calls these and turns :class:`TransferError` into host statuses.

Accounts. Everything happens with the rights of the step's account. An agent running
as an ordinary user acts only as itself (anything else is an ``AccountError``, status
311) and the kernel enforces its rights. A root agent acting for another account
does each listing, read and write in a thread that has taken the account's file-system
identity (:mod:`jobfleet.agent.credentials`), so the kernel resolves every path as the
account: a symlink at any component, or ``..``, leads only where the account may go.
It also judges the account's rights itself first, from the account's uid, primary gid
and supplementary groups against each inode's owner and permission bits — including
the search bit of every directory above the path and above where its symlinks lead,
and the sticky-directory rule on replace — to refuse with a clear message before
touching anything; on a machine where threads cannot take an identity, that judgement
is the only one (and ACLs are then not consulted).

Durability. A downloaded file is written beside its destination under a hidden
temporary name, checked against the expected size and sha256, fsynced, given its mode
and owner, and renamed over the destination; the directory is fsynced after the
rename. A partial or corrupt download never replaces a good file, and every failure
removes the temporary file.
"""

from jobfleet.agent.files.download import TEMP_MARK, download, make_dir
from jobfleet.agent.files.pacing import Progress
from jobfleet.agent.files.rights import TransferError
from jobfleet.agent.files.sources import MissingSource, SourceFile, expand_sources
from jobfleet.agent.files.upload import upload

__all__ = [
    "TEMP_MARK",
    "MissingSource",
    "Progress",
    "SourceFile",
    "TransferError",
    "download",
    "expand_sources",
    "make_dir",
    "upload",
]
