"""How the agent keeps the CA it pinned for its server."""

from __future__ import annotations

from pathlib import Path

from jobfleet.agent.channel import PINNED_CA, load_pinned, save_pinned

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_a_link_planted_at_the_pinned_cas_partial_file_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("kept")
    state = tmp_path / "state"
    state.mkdir()
    partial = (state / PINNED_CA).with_suffix(".tmp")
    partial.symlink_to(outside)
    save_pinned(state, CA)
    assert outside.read_text() == "kept"
    assert load_pinned(state) == CA
    assert not partial.exists() and not partial.is_symlink()
    assert ((state / PINNED_CA).stat().st_mode & 0o777) == 0o600
