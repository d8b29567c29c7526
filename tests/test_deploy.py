"""What can be checked of deploy/ without a container engine or systemd: the files
parse, name the same ports and paths, and the scripts pass the shell's own check."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).parent.parent / "deploy"
SCRIPTS = ["install-agent.sh", "container-entrypoint.sh"]


def test_compose_runs_postgresql_redis_three_nodes_and_a_balancer() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "node1", "node2", "node3", "lb"}
    seeds = []
    for name in ("node1", "node2", "node3"):
        node = services[name]
        env = node["environment"]
        assert env["JOBFLEET_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["JOBFLEET_REDIS_URL"] == "redis://redis:6379/0"
        assert node["build"]["dockerfile"] == "deploy/Containerfile"
        assert f"{name}:/var/lib/jobfleet" in node["volumes"]
        seeds += [name] if env.get("JOBFLEET_SEED") == "1" else []
    assert seeds == ["node1"]
    assert services["lb"]["ports"] == ["8080:8080", "8443:8443"]
    # no password written into the file
    assert "${POSTGRES_PASSWORD:?" in (DEPLOY / "compose.yaml").read_text()


def test_the_balancer_checks_readiness_on_both_ports_of_every_node() -> None:
    text = (DEPLOY / "haproxy.cfg").read_text()
    for port in (8080, 8443):
        assert sorted(re.findall(rf"server (node\d) node\d:{port} check", text)) == [
            "node1", "node2", "node3"]
    assert text.count("option httpchk GET /readyz") == 2


def test_nodes_take_the_client_address_from_the_balancer_alone() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name in ("node1", "node2", "node3"):
        node = compose["services"][name]
        # reachable only through the balancer, which names the client
        assert "ports" not in node
        assert node["environment"]["FORWARDED_ALLOW_IPS"] == "*"
    api = (DEPLOY / "haproxy.cfg").read_text().split("frontend api", 1)[1].split("backend", 1)[0]
    lines = [line.strip() for line in api.splitlines()]
    forwardfor = lines.index("option forwardfor")
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "Forwarded"):
        assert lines.index(f"http-request del-header {header}") < forwardfor


def test_the_image_runs_the_server_unprivileged() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert 'CMD ["server", "--config", "/etc/jobfleet/server.toml"]' in text


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_pass_sh_n_and_shellcheck(script: str) -> None:
    path = DEPLOY / script
    subprocess.run(["sh", "-n", str(path)], check=True)
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_units_name_the_paths_the_installer_writes() -> None:
    server = (DEPLOY / "systemd" / "jobfleet-server.service").read_text()
    agent = (DEPLOY / "systemd" / "jobfleet-agent.service").read_text()
    installer = (DEPLOY / "install-agent.sh").read_text()
    assert "--config /etc/jobfleet/server.toml" in server
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "User=jobfleet"):
        assert option in server
    assert "NoNewPrivileges" not in agent.split("[Service]")[1]  # see the unit's comment
    for path in ("/etc/jobfleet-agent/enroll.token", "/etc/jobfleet-agent/agent.env",
                 "/opt/jobfleet-agent/bin/jobfleet-agent"):
        assert path in agent
    assert 'CONF=/etc/jobfleet-agent' in installer and "enroll.token" in installer
    assert "--enroll-token-file" in agent


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze")
def test_units_verify() -> None:
    units = sorted(str(p) for p in (DEPLOY / "systemd").glob("*.service"))
    result = subprocess.run(["systemd-analyze", "verify", *units],
                            capture_output=True, text=True)
    # the programs are not installed here: everything else must pass
    problems = [line for line in result.stderr.splitlines()
                if line.strip() and "is not executable" not in line]
    assert not problems, problems
