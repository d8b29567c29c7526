"""The CLI, the SDK and the demo, used the way an operator uses them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shlex
import signal
import sys
from pathlib import Path

import httpx
import pytest
from tests.integration.harness import Running, eventually

from jobfleet.sdk import AsyncJobClient, JobClient

# a client of the API, whose own tests run on every backend
pytestmark = pytest.mark.one_backend

IPS = ["127.0.0.2", "127.0.0.3"]


async def cli(running: Running, *args: str, env: dict[str, str] | None = None
              ) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobfleet", "--server", running.url, "--bootstrap",
        str(running.data_dir / "server" / "bootstrap.json"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200", **(env or {})})
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_cli_run_status_logs_hosts(running: Running) -> None:
    await running.start_agents(IPS)
    code, out = await cli(running, "run", "--host", IPS[0], "--host", IPS[1], "-c",
                          "echo from-$JOBFLEET_HOST_IP")
    assert code == 0, out
    assert IPS[0] in out and IPS[1] in out and f"from-{IPS[1]}" in out
    code, out = await cli(running, "run", "--host", IPS[0], "--host", IPS[1], "-c",
                          '[ "$JOBFLEET_HOST_IP" = 127.0.0.2 ] || exit 5', "--json")
    assert code == 1
    result = json.loads(out)
    job_id = result["job_instance_id"]
    exits = {h["ip"]: h["exit_code"] for h in result["hosts"]}
    assert exits == {IPS[0]: 0, IPS[1]: 5}
    code, out = await cli(running, "status", str(job_id))
    assert code == 1 and IPS[1] in out  # the job failed
    code, out = await cli(running, "logs", str(job_id), "--host", IPS[0])
    assert code == 0 and out == ""
    code, out = await cli(running, "hosts")
    assert code == 0 and IPS[0] in out and IPS[1] in out


async def test_cli_runs_a_python_file(running: Running, tmp_path: Path) -> None:
    await running.start_agents(IPS[:1])
    script = tmp_path / "check.py"
    script.write_text("import sys\nprint('args', sys.argv[1:])\n")
    code, out = await cli(running, "run", "--host", IPS[0], "--file", str(script), "--param",
                          "--a=1 --b=x", "--json")
    assert code == 0, out
    assert json.loads(out)["hosts"][0]["log"] == "args ['--a=1', '--b=x']\n"


# CRLF line ends (each after a comment mark, so the shell ignores the CR) and bytes that
# are not UTF-8: a .bat saved on Windows in a legacy code page, as far as bytes go
CRLF_SCRIPT = (
    b"# caf\xe9 \xd6\xd0 \xff #\r\n"
    b'sha256sum "$0" #\r\n'
)


async def test_a_script_file_reaches_the_host_byte_for_byte(
        running: Running, tmp_path: Path) -> None:
    """``run --file`` and the SDK send a script's bytes unchanged, line ends included: the
    file the agent runs hashes as the operator's file does."""
    await running.start_agents(IPS[:1])
    digest = hashlib.sha256(CRLF_SCRIPT).hexdigest()
    script = tmp_path / "crlf.sh"
    script.write_bytes(CRLF_SCRIPT)
    code, out = await cli(running, "run", "--host", IPS[0], "--file", str(script), "--json")
    assert code == 0, out
    # the operator is warned (on stderr, which this helper reads with stdout) and the
    # script is sent as written all the same
    warning, _, answer = out.partition("\n{")
    assert "CRLF line ends" in warning, out
    assert json.loads("{" + answer)["hosts"][0]["log"].startswith(digest), out
    boot = running.boot
    async with AsyncJobClient(running.url, boot["bk_app_code"], boot["bk_app_secret"],
                              "admin", biz=2) as client:
        result = await client.execute_and_wait(CRLF_SCRIPT, hosts=IPS[:1])
    assert result.ok and result.hosts[0].log.startswith(digest), result


async def test_cli_admin_and_errors(running: Running) -> None:
    code, out = await cli(running, "admin", "user", "create", "bob")
    assert code == 0, out
    code, out = await cli(running, "admin", "user", "grant", "bob", "--biz", "2")
    assert code == 0, out
    # a second create is refused as a second app create is, saying what was likely meant
    code, out = await cli(running, "admin", "user", "create", "bob")
    assert code == 2 and "Traceback" not in out, out
    assert out.startswith("error 1249409: User 'bob' already exists: set its password with "
                          "`jobfleet admin user passwd bob`"), out
    # a new username outside bk-user's rule: one line naming the rule, exit 2
    for name in ("bob smith", "ev\nil"):
        code, out = await cli(running, "admin", "user", "create", name)
        assert code == 2 and out.count("\n") == 1, out
        assert out.startswith(f"error 1241010: Invalid parameter [username]: {name!r}: "
                              "a username is 2 to 32 letters"), out
    code, out = await cli(running, "admin", "app", "create", "twice")
    assert code == 0, out
    code, out = await cli(running, "admin", "app", "create", "twice")
    assert code == 2 and out.startswith("error 1249409: App 'twice' already exists"), out
    code, out = await cli(running, "admin", "user", "create", "bob", "--admin")
    assert code == 0 and out.startswith("user bob: administrator"), out
    users = await running.server.identity.list_users()
    assert {"scope_type": "biz", "scope_id": "2"} in next(
        u for u in users if u["username"] == "bob")["scopes"]
    code, out = await cli(running, "status", "999999")
    assert code == 2 and "1244006" in out and "Traceback" not in out
    code, out = await cli(running, "run", "--host", IPS[0], "-c", "true",
                          env={"JOBFLEET_APP_SECRET": "wrong"})
    assert code == 2 and "Traceback" not in out


async def test_sdk_clients(running: Running) -> None:
    await running.start_agents(IPS)
    boot = running.boot
    async with AsyncJobClient(running.url, boot["bk_app_code"], boot["bk_app_secret"],
                              "admin", biz=2) as client:
        result = await client.execute_and_wait("echo async $1", hosts=IPS, params="ok")
    assert result.ok and sorted(h.log for h in result.hosts) == ["async ok\n"] * 2

    def sync_run() -> list[str]:
        with JobClient(running.url, boot["bk_app_code"], boot["bk_app_secret"], "admin",
                       biz=2) as client:
            res = client.execute_and_wait("print('sync')", hosts=IPS[:1], language=4)
            assert res.ok
            return [h.log for h in res.hosts]
    assert await asyncio.to_thread(sync_run) == ["sync\n"]


async def test_demo_runs_end_to_end() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobfleet", "demo", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    text = out.decode()
    assert proc.returncode == 0, text
    for i in range(2, 7):
        assert f"hello from 127.0.0.{i}" in text
    # the job's status in words, as `jobfleet status` says it, not bk-job's number
    assert re.search(r"job 1: success in \d+(ms|\.\d+s)", text), text


async def test_demo_keep_prints_a_command_and_a_login_that_work() -> None:
    """What `make demo` prints is what the user copies: the command on one line, at the
    width of a usual terminal, runs as printed; the console login it shows logs in."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobfleet", "demo", "--keep", "--agents", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "80"})
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while not lines or not lines[-1].startswith("Press Ctrl-C"):
            line = await asyncio.wait_for(proc.stdout.readline(), 180)
            assert line, "".join(lines)
            lines.append(line.decode().rstrip("\n"))
        text = "\n".join(lines)
        [command] = [line[len("Try: "):] for line in lines if line.startswith("Try: ")]
        words = shlex.split(command)
        assert "run" in words and words[-2:] == ["-c", "uptime"], text
        run = await asyncio.create_subprocess_exec(
            *words, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(run.communicate(), 120)
        assert run.returncode == 0, out.decode()
        [console] = [line for line in lines if line.startswith("Console: ")]
        match = re.fullmatch(r"Console: (\S+)/ \(log in as (\S+), password (\S+)\)", console)
        assert match, text
        url, user, password = match.groups()
        async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
            answer = await http.post("/login", data={
                "username": user, "password": password, "next": "/api_execute/1"})
            assert answer.status_code == 303, answer.text
            assert answer.headers["location"].endswith("/api_execute/1")
            page = await http.get("/api_execute/1")
            assert page.status_code == 200 and "jobfleet demo" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 60)
    # the data directory holds the demo's keys and the admin's password: it goes with it
    [data_dir] = [found.group(1) for line in lines
                  if (found := re.search(r"\(data in (/\S+)\)", line))]
    assert not Path(data_dir).exists()


async def test_cli_shows_hostile_host_text_without_obeying_it(running: Running) -> None:
    # a host name and output full of escape sequences, read as on a terminal
    await running.start_agents(
        IPS[:1], settings_of={IPS[0]: {"hostname": "web\x1b]0;pwned\x07\x1b[2J"}}
    )
    terminal = {"FORCE_COLOR": "1"}
    code, out = await cli(running, "hosts", env=terminal)
    assert code == 0, out
    # the gateway drops a host name's control characters before the CLI sees it
    assert "web]0;pwned[2J" in out and "\x1b]0;" not in out and "\x1b[2J" not in out
    code, out = await cli(
        running, "run", "-H", IPS[0], "--json", "-c",
        r"printf 'a\033[2Jb\033]0;t\007c\n[/oops] \377\n'",
    )
    assert code == 0, out
    job = str(json.loads(out)["job_instance_id"])
    for args in (["logs", job], ["logs", job, "-H", IPS[0]], ["logs", "-f", job],
                 ["status", job], ["run", "-H", IPS[0], "-c", r"printf '\033[2J[/x]\n'"]):
        code, out = await cli(running, *args, env=terminal)
        assert code == 0, (args, out)
        assert "\x1b[2J" not in out and "\x1b]0;" not in out, (args, out)
        assert "\\u001b[2J" in out, (args, out)
        assert "Traceback" not in out


async def test_cli_hosts_of_a_business_that_does_not_exist(running: Running) -> None:
    # as every other command: the server's code and message, exit status 2
    code, out = await cli(running, "hosts", "--biz", "999")
    assert code == 2 and "1243049" in out and "999" in out, out
    code, out = await cli(running, "hosts", "--biz", "-5")
    assert code == 2 and "1243049" in out and "-5" in out and "Traceback" not in out, out
    code, out = await cli(running, "hosts", "--biz", "2")
    assert code == 0, out


async def test_cli_refuses_an_app_limited_to_a_business_that_does_not_exist(
        running: Running) -> None:
    code, out = await cli(running, "admin", "app", "create", "ops", "--biz", "2,999")
    assert code == 2 and "Traceback" not in out, out
    assert "1243049" in out and "allowed_biz: business 999 does not exist" in out, out
    assert "ops" not in {a["app_code"] for a in await running.server.identity.list_apps()}
    code, out = await cli(running, "admin", "user", "grant", "admin", "--biz", "999")
    assert code == 2 and "1243049" in out and "999" in out, out
    code, out = await cli(running, "admin", "app", "create", "ops", "--biz", "2")
    assert code == 0, out


async def test_cli_refuses_an_app_code_a_blueking_client_could_not_send(
        running: Running) -> None:
    code, out = await cli(running, "admin", "app", "create", "bad name!")
    assert code == 2 and "Traceback" not in out, out
    assert out.startswith("error 1241010: Invalid parameter [app_code]: 'bad name!'"), out
    assert "lowercase letters, digits, '_' and '-'" in out, out
    assert "bad name!" not in {a["app_code"] for a in await running.server.identity.list_apps()}


async def test_cli_lists_a_jobs_hosts_in_the_consoles_and_the_sdks_order(
        running: Running) -> None:
    """Hosts whose ids do not follow their addresses: ``status``, ``logs`` and ``--json``
    list them as the SDK and the console's job page do."""
    ips = ["127.0.0.43", "127.0.0.41", "127.0.0.42"]
    for ip in ips:  # no agent: each host ends at once, agent abnormal
        await running.server.inventory.add(2, ip)
    job = (await running.wire.run_script("true", sorted(ips)))["job_instance_id"]
    await running.wire.wait(job)
    boot = running.boot
    async with AsyncJobClient(running.url, boot["bk_app_code"], boot["bk_app_secret"],
                              "admin", biz=2) as client:
        sdk = [h.ip for h in (await client.get_result(job)).hosts]
    assert sdk == ips
    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as http:
        await http.post("/login", data={"username": "admin",
                                         "password": boot["admin_password"]})
        page = (await http.get(f"/api_execute/{job}")).text
    assert re.findall(r'class="host"[^>]*data-ip="([0-9.]+)"', page) == ips
    code, out = await cli(running, "status", str(job))
    assert code == 1, out
    assert [ip for ip in re.findall(r"127\.0\.0\.4[123]", out)] == ips, out
    code, out = await cli(running, "logs", str(job))
    assert re.findall(r"^== (\S+) ", out, re.M) == ips, out
    code, out = await cli(running, "logs", str(job), "--json")
    assert [h["ip"] for h in json.loads(out)["hosts"]] == ips, out


async def test_cli_logs_into_a_closed_pipe_ends_as_a_pipeline_stage_does(
    running: Running,
) -> None:
    # `jobfleet logs JOB | head -1`: the reader leaves early; the CLI ends as SIGPIPE ends
    # any tool in a pipeline (the shell says 141), never 1 ("the job failed"), no traceback
    await running.start_agents(IPS[:1])
    code, out = await cli(running, "run", "-H", IPS[0], "--json", "-c", "seq 1 200000")
    assert code == 0, out[-2000:]
    job = str(json.loads(out)["job_instance_id"])
    # far more than a pipe holds (64 KiB), so `head` leaves while the CLI still writes
    code, whole = await cli(running, "logs", job)
    assert code == 0 and len(whole) > 1_000_000, (code, len(whole), whole[:300])
    command = [sys.executable, "-m", "jobfleet", "--server", running.url, "--bootstrap",
               str(running.data_dir / "server" / "bootstrap.json")]
    for args in (["logs", job], ["logs", job, "-H", IPS[0]], ["logs", "-f", job]):
        proc = await asyncio.create_subprocess_exec(
            "/bin/bash", "-c",
            shlex.join([*command, *args]) + " 2>err.txt | head -1; echo status=${PIPESTATUS[0]}"
            "; cat err.txt",
            stdout=asyncio.subprocess.PIPE, cwd=running.data_dir,
            env={**os.environ, "COLUMNS": "200"})
        shown, _ = await asyncio.wait_for(proc.communicate(), 120)
        text = shown.decode()
        assert "status=141" in text, (args, text)
        assert "Traceback" not in text and "Error" not in text, (args, text)


async def test_an_agents_host_name_is_stored_without_control_characters(
    running: Running,
) -> None:
    # a host name is letters, digits, dots and hyphens (RFC 1123): an escape sequence in
    # one is an agent's lie, kept out of the inventory, the console and every client
    await running.start_agents(
        IPS[:1], settings_of={IPS[0]: {"hostname": "web\x1b]0;pwned\x07\x1b[2J\r\n\x9b-01",
                                       "labels": {"role": "db\x1b[2J\x07-primary"}}}
    )
    boot = running.boot
    async with AsyncJobClient(running.url, boot["bk_app_code"], boot["bk_app_secret"],
                              "admin", biz=2) as client:
        hosts = await client.list_hosts(bk_biz_id=2)
    assert [h["hostname"] for h in hosts if h["ip"] == IPS[0]] == ["web]0;pwned[2J-01"]
    # labels too, which the hello carries beside the name (written a moment later)
    await eventually(lambda: _labels_of(running, IPS[0]), timeout=10)
    assert await _labels_of(running, IPS[0]) == {"role": "db[2J-primary"}


async def _labels_of(running: Running, ip: str) -> dict[str, str]:
    listed = await running.wire.http.get("/api/jobfleet/v1/hosts", headers=running.wire.headers())
    [host] = [h for h in listed.json()["data"] if h["ip"] == ip]
    return dict(host["labels"])
