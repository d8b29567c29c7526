"""Variable values from a launch or from a host's report are data for the steps after:
they never become code, never leave a password where others can read it."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import Running
from tests.integration.test_plans import A, B, execute, hosts, make_plan, script, step_ids
from tests.integration.test_templates import own


async def test_array_values_from_a_launch_or_a_host_do_not_run_as_code(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents([A, B])
    mark = tmp_path / "ran"
    # host A reports a value for the array; the next step runs on host B
    plan_id, _ = await make_plan(running, [
        script("set", f'echo "colors=(x) ; touch {mark}-reported ; (y)" '
               '>> "$JOBFLEET_VARS_FILE"\n', hosts(A)),
        script("use", 'printf "<%s>" "${colors[@]}"; echo; declare -p sizes\n', hosts(B)),
    ], [{"name": "colors", "type": 6, "value": "(a b)", "changeable": 1},
        {"name": "sizes", "type": 5, "value": '(["k"]=v)'}])
    answer = await execute(running, plan_id, global_var_list=[
        {"name": "sizes", "value": f'(["k"]=$(touch {mark}-launch) ["`touch {mark}-key`"]=v)'}])
    assert answer["result"], answer
    job_id = answer["data"]["job_instance_id"]
    status = await running.wire.wait(job_id)
    assert status["job_instance"]["status"] == 3, status
    steps = await step_ids(running, job_id)
    logs = await running.wire.logs(job_id, steps[1], [B])
    assert logs[B].startswith(f"<x)><;><touch><{mark}-reported><;><(y>\n"), logs
    # the key with backticks is a key like any other
    assert f"touch {mark}-key" in logs[B], logs
    assert not list(tmp_path.glob("ran*"))


async def test_a_password_in_a_shell_parameter_stays_off_the_command_line(
        running: Running) -> None:
    await running.start_agents([A])
    plan_id, _ = await make_plan(running, [
        script("login", 'tr "\\0" " " < /proc/$$/cmdline; echo; echo "arg=$1 $#"\n', hosts(A),
               script_param="--password ${secret}"),
    ], [{"name": "secret", "type": 4, "value": "s3cr3t-value"}])
    answer = await execute(running, plan_id)
    job_id = answer["data"]["job_instance_id"]
    status = await running.wire.wait(job_id)
    assert status["job_instance"]["status"] == 3, status
    steps = await step_ids(running, job_id)
    cmdline, args, _ = (await running.wire.logs(job_id, steps[0], [A]))[A].split("\n")
    assert "s3cr3t-value" not in cmdline, cmdline
    assert args == "arg=--password 2"


async def test_a_password_variable_is_refused_in_a_file_path(running: Running) -> None:
    """A file step's paths are shown as they ran: a password in one would be shown."""
    source = {"file_list": ["/srv/${secret}/f.txt"], "account": {"alias": "root"},
              "server": hosts(A)}
    for info in [
        {"file_source_list": [source], "file_destination": {
            "path": "/srv/out/", "account": {"alias": "root"}, "server": hosts(B)}},
        {"file_source_list": [{**source, "file_list": ["/srv/f.txt"]}], "file_destination": {
            "path": "/srv/${secret}/", "account": {"alias": "root"}, "server": hosts(B)}},
    ]:
        answer = await own(running, "POST", "/templates", {
            "name": "ship",
            "global_var_list": [{"name": "secret", "type": 4, "value": "s3cr3t-value"}],
            "step_list": [{"name": "ship", "type": 2, "file_info": info}]})
        assert not answer["result"] and answer["code"] == 1241010, answer
        assert "password variable 'secret'" in answer["message"], answer
