"""A file step's paths as they run: a password variable in one is not filled in."""

from __future__ import annotations

from jobfleet.engine.variables import render_file_config


def test_a_password_in_a_file_path_saved_before_the_check_keeps_its_reference() -> None:
    config = {"target_path": "/srv/${release}/${secret}/",
              "sources": [{"kind": "host", "files": ["/src/${secret}.tar", "/src/${release}"]}]}
    values = {"release": "r42", "secret": "s3cr3t-value"}
    rendered = render_file_config(config, values, ["secret"])
    assert rendered["target_path"] == "/srv/r42/${secret}/"
    assert rendered["sources"][0]["files"] == ["/src/${secret}.tar", "/src/r42"]
