"""A changeable variable's value set by one host is data on the hosts of the steps after:
never code in their Python or Perl script, never extra arguments, never a way out of a
file step's destination. The values given at launch keep being replaced in the text."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from tests.integration.harness import Running
from tests.integration.test_plans import ROOT, A, B, execute, hosts, make_plan, script, step_ids
from tests.integration.test_templates import own

from jobfleet.store.tables import job_plans, job_templates


def _report(name: str, value: str) -> str:
    """A shell step that reports ``value`` for ``name`` through ``$JOBFLEET_VARS_FILE``."""
    quoted = "'" + value.replace("'", "'\\''") + "'"
    return f'printf "%s=%s\\n" {name} {quoted} >> "$JOBFLEET_VARS_FILE"\n'


async def _run(running: Running, name: str, steps: list[dict[str, Any]],
               variables: list[dict[str, Any]],
               **extra: Any) -> tuple[dict[str, Any], int, list[int]]:
    plan_id, _ = await make_plan(running, steps, variables, name=name)
    answer = await execute(running, plan_id, **extra)
    assert answer["result"], answer
    job_id = answer["data"]["job_instance_id"]
    status = await running.wire.wait(job_id)
    return status, job_id, await step_ids(running, job_id)


async def test_values_set_by_a_host_are_not_code_on_the_next_hosts(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents([A, B])
    mark = tmp_path / "pwn"
    string = {"type": 1, "value": "start", "changeable": 1}
    python_value = f'";import os;os.system("touch {mark}-py")#'
    perl_value = f'"; system("touch {mark}-pl"); "'
    dest = tmp_path / "dest"
    (tmp_path / "payload.txt").write_text("payload\n")
    jobs = await asyncio.gather(
        # host A sets the value; host B's Python step names it
        _run(running, "python", [
            script("set", _report("v", python_value), hosts(A)),
            script("use", 'x = "${v}"\nprint("got", x)\n', hosts(B), lang=4),
        ], [{"name": "v", **string}]),
        _run(running, "perl", [
            script("set", _report("w", perl_value), hosts(A)),
            script("use", 'my $x = "${w}";\nprint "got $x\\n";\n', hosts(B), lang=3),
        ], [{"name": "w", **string}]),
        # a value given at launch is the operator's: still replaced in the text
        _run(running, "given", [
            script("keep", "true\n", hosts(A)),
            script("python", 'print("got ${v} ${o}")\n', hosts(B), lang=4),
            script("perl", 'print "got ${v} ${o}\\n";\n', hosts(B), lang=3),
        ], [{"name": "v", **string}, {"name": "o", "type": 1, "value": "plan"}],
            global_var_list=[{"name": "v", "value": "given at launch"}]),
        # a parameter holding a host's value stays one argument
        _run(running, "params", [
            script("set", _report("p", f"a b; touch {mark}-param"), hosts(A)),
            script("args", 'printf "<%s>" "$@"; echo\n', hosts(B),
                   script_param="--name ${p} last"),
            script("python args", 'import sys\nprint(sys.argv[1:])\n', hosts(B), lang=4,
                   script_param="--name=${p}"),
        ], [{"name": "p", **string}]),
        # a host's value does not take a file step's destination elsewhere
        _run(running, "file", [
            script("set", _report("d", ".."), hosts(A)),
            {"name": "ship", "type": 2, "file_info": {
                "file_source_list": [{"file_list": [str(tmp_path / "payload.txt")],
                                      "account": ROOT, "server": hosts(A)}],
                "file_destination": {"path": f"{dest}/in/${{d}}/", "account": ROOT,
                                     "server": hosts(B)}}},
        ], [{"name": "d", **string}]),
    )
    (py, py_job, py_steps), (pl, pl_job, pl_steps), (given, given_job, given_steps), \
        (params, params_job, param_steps), (ship, _, _) = jobs
    assert not list(tmp_path.glob("pwn*"))
    for status, job, steps, name, language in [(py, py_job, py_steps, "v", "Python"),
                                               (pl, pl_job, pl_steps, "w", "Perl")]:
        assert status["job_instance"]["status"] == 4, status
        assert [s["status"] for s in status["step_instance_list"]] == [3, 4], status
        log = (await running.wire.logs(job, steps[1], [B]))[B]
        assert f"variable {name!r} was set by a host" in log, log
        assert language in log, log
    assert given["job_instance"]["status"] == 3, given
    for step in given_steps[1:]:
        log = (await running.wire.logs(given_job, step, [B]))[B]
        assert log == "got given at launch plan\n", log
    assert params["job_instance"]["status"] == 3, params
    logs = [(await running.wire.logs(params_job, step, [B]))[B] for step in param_steps[1:]]
    assert logs == [f"<--name><a b; touch {mark}-param><last>\n",
                    f"['--name=a b; touch {mark}-param']\n"], logs
    assert ship["job_instance"]["status"] == 4, ship
    assert [s["status"] for s in ship["step_instance_list"]] == [3, 4], ship
    assert not (dest / "payload.txt").exists()
    assert not dest.exists() or not list(dest.rglob("payload.txt"))


async def test_names_the_loader_or_interpreters_read_are_not_variables(
        running: Running) -> None:
    """A variable named LD_PRELOAD, PYTHONPATH… would load code into every process of a
    step (and a host could set its value for the next hosts): refused where defined;
    one stored before is kept out of the scripts' environment."""
    for name in ["LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONSTARTUP", "PERL5OPT", "PS4",
                 "BASH_ENV", "ENV", "NODE_OPTIONS", "GCONV_PATH", "SHELLOPTS",
                 "JAVA_TOOL_OPTIONS", "GIT_SSH_COMMAND", "GIT_CONFIG_COUNT", "LESSOPEN",
                 "psmodulepath", "PsModulePath", "ComSpec", "pathext"]:
        answer = await own(running, "POST", "/templates", {
            "name": f"with {name}",
            "global_var_list": [{"name": name, "type": 1, "value": "x", "changeable": 1}],
            "step_list": [{"name": "s", "type": 1, "script_info": {
                "script_content": "true\n", "script_language": 1, "account": ROOT,
                "server": hosts(A)}}]})
        assert not answer["result"] and answer["code"] == 1241010, answer
        assert f"{name!r} is reserved" in answer["message"], answer
    await running.start_agents([B])
    plan_id, _ = await make_plan(running, [
        script("shell", 'echo "shell=${LD_PRELOAD-unset} $(env | grep -c ^LD_PRELOAD=)"\n'
               'echo "git=${GIT_SSH_COMMAND-unset} $(env | grep -c ^GIT_SSH_COMMAND=)"\n',
               hosts(B)),
        script("python", 'import os\n'
               'print("python", os.environ.get("LD_PRELOAD"), "${LD_PRELOAD}")\n',
               hosts(B), lang=4),
    ], [{"name": "preload", "type": 1, "value": "/nonexistent/evil.so"},
        {"name": "sshcmd", "type": 1, "value": "false"}], name="stored")
    # a plan saved before the name was reserved
    async with running.server.db.begin() as conn:
        for table in (job_templates, job_plans):
            rows = await conn.execute(select(table.c.id, table.c.variables))
            for row_id, variables in rows.all():
                stored = {"preload": "LD_PRELOAD", "sshcmd": "GIT_SSH_COMMAND"}
                renamed = [{**v, "name": stored.get(v["name"], v["name"])} for v in variables]
                await conn.execute(update(table).where(table.c.id == row_id)
                                   .values(variables=renamed))
    answer = await execute(running, plan_id)
    assert answer["result"], answer
    job_id = answer["data"]["job_instance_id"]
    status = await running.wire.wait(job_id)
    assert status["job_instance"]["status"] == 3, status
    steps = await step_ids(running, job_id)
    logs = [(await running.wire.logs(job_id, step, [B]))[B] for step in steps]
    # the text still reads the operator's value; the loader never sees it
    assert logs == ["shell=unset 0\ngit=unset 0\n",
                    "python None /nonexistent/evil.so\n"], logs
