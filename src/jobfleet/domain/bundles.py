"""Many small files in one request: what a target agent may ask the server for at once.

A file step that copies a tree of small files would otherwise cost one HTTP round trip,
one authentication and a few database reads per file and per target. A target agent
asks instead for up to ``MAX_FILES`` files of at most ``MAX_FILE_BYTES`` each, and
``MAX_BYTES`` in all, in one request; the server answers their bytes one after another
in the order asked, and the agent, which knows each file's size and SHA-256 from its
task, splits and checks them. Larger files keep their own request (range-resumable).
"""

from __future__ import annotations

MAX_FILES = 512
MAX_FILE_BYTES = 1024 * 1024
# an agent holds a bundle in memory while it sends or places it, up to four at a time
MAX_BYTES = 4 * 1024 * 1024
# the request body: the blob ids as a JSON document (ids are 32 hex characters)
MAX_REQUEST_BYTES = 64 * 1024
PATH = "bundle"
