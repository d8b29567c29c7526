"""What the template page says of each step, in a line for what and one for where."""

from __future__ import annotations

from jobfleet.web.catalog import step_summary


def test_a_script_step() -> None:
    step = {"type": 1, "script_info": {
        "script_type": 1, "script_language": 1, "script_content": "\n  echo hi\necho two\n",
        "server": {"ip_list": [{"ip": "127.0.0.1"}, {"ip": "127.0.0.2"}],
                   "topo_node_list": [{"id": 3}]}}}
    assert step_summary(step) == {"what": "shell: echo hi", "where": "ip: 2, topo_node: 1"}


def test_a_referenced_script_on_a_host_variable() -> None:
    step = {"type": 1, "script_info": {"script_type": 2, "script_id": "abc",
                                       "script_version_id": 7, "script_language": 4,
                                       "server": {"variable": "targets"}}}
    assert step_summary(step) == {"what": "python: script abc v7", "where": "${targets}"}


def test_a_file_step_and_a_confirmation() -> None:
    step = {"type": 2, "file_info": {
        "file_source_list": [{"file_list": ["/a", "/b"]}, {"file_list": ["/c"]}],
        "file_destination": {"path": "/tmp/x", "server": {"host_id_list": [1]}}}}
    assert step_summary(step) == {"what": "3 → /tmp/x", "where": "host_id: 1"}
    confirm = {"type": 3, "approval_info": {"approval_message": "go on?"}}
    assert step_summary(confirm) == {"what": "go on?", "where": ""}
    assert step_summary({"type": 3}) == {"what": "", "where": ""}
