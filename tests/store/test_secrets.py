"""The secret key's sources agree on what one key is."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from jobfleet.store.secrets import Cipher


def test_a_key_from_the_environment_with_a_newline_is_the_files_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key()
    (tmp_path / "secret.key").write_bytes(key + b"\n")
    from_file = Cipher.from_data_dir(tmp_path)
    # a secret mounted from a file often ends in a newline
    monkeypatch.setenv("JOBFLEET_SECRET_KEY", key.decode() + "\n")
    from_env = Cipher.from_data_dir(tmp_path)
    assert from_env.check_value() == from_file.check_value()
    assert from_file.open_bytes(from_env.seal_bytes(b"x")) == b"x"
