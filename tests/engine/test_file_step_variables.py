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


def test_a_value_a_host_set_does_not_lead_a_path_out_of_its_folder() -> None:
    config = {"target_path": "/srv/${dir}/${o}/",
              "sources": [{"kind": "host", "files": ["/src/${name}.tar"]}]}
    launch = {"o": "a/../b", "name": "pkg"}
    # the operator's own values go in as they are
    assert render_file_config(config, {**launch, "dir": ".."})["target_path"] == "/srv/../a/../b/"
    for bad in ["..", ".", "x/y", "x\\y", "x\0y"]:
        rendered = render_file_config(config, {**launch, "dir": bad}, (), ["dir"])
        assert rendered["target_path"] == "/srv/${dir}/${o}/", bad
        assert "variable 'dir'" in rendered["refused"], bad
    # a host's value may sit beside the operator's dots, not make a dot part with them
    dotted = {"target_path": "/srv/.${dir}/", "sources": []}
    assert "refused" in render_file_config(dotted, {"dir": "."}, (), ["dir"])
    fine = render_file_config(config, {**launch, "dir": "release-1.2", "name": ".."}, (),
                              ["dir"])
    assert "refused" not in fine
    assert fine["target_path"] == "/srv/release-1.2/a/../b/"
    assert render_file_config(config, {**launch, "dir": "v", "name": "x/y"}, (), ["name"])[
        "refused"]
