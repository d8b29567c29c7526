"""The server's configuration file: every setting from TOML, flags over it, and a
refusal naming the key and the file for what is unknown or of the wrong type."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobfleet import __version__
from jobfleet.cli.main import app
from jobfleet.server_config import SETTINGS, ConfigError, load, read_file

EXAMPLE = Path(__file__).parent.parent / "deploy" / "server.toml"

EVERY_SETTING = """
data_dir = "{data}"
host = "127.0.0.2"
port = 9001
database_url = "postgresql+asyncpg://jf@db/jf"
redis_url = "redis://redis:6379/1"
node_ttl = 4.0
log_level = "debug"
log_format = "json"
heartbeat = 4.5
max_file_size = 1048576
tls_cert = "{data}/cert.pem"
tls_key = "{data}/key.pem"
agent_port = 9443
agent_plaintext = true
bootstrap_token_ttl = "2h"
callback_allow = ["127.0.0.0/8", "::1"]
public_url = "http://127.0.0.1:8080/"
cookie_secure = "always"
metrics_token = "m-token"
max_body = 4096
header_timeout = 3.0
body_timeout = 4
idle_timeout = 5.0
max_pending_connections = 6
max_api_requests = 7
enroll_rate = 8.5
enroll_burst = 9
auth_failure_rate = 0.5
auth_failure_burst = 11
dangerous_rule_time = 0.5
dangerous_check_time = 3

[engine]
agent_lost_grace = 1.5
recovery_window = 2.5
timeout_slack = 3.5
lease_ttl = 4.5
lease_renew = 1.25
driver_stall = 45.0
reconcile_interval = 0.5
terminate_wait = 6.5
max_output = 2048
max_output_bytes = 4096
refusal_audit_window = 7.5
max_timeout = 100
callback_attempts = 3
callback_backoff = 0.25
callback_backoff_max = 9.0
callback_timeout = 2.0
callback_per_receiver = 2
cron_tick = 0.75
cron_grace = 30.0
cron_time_scale = 60.0
presence_batch = 0.05

[retention]
jobs = "12h"
audit = 0
blobs = "1d"
heal = "2d"
interval = "10m"
batch = 50
pause = 0.5

[smtp]
host = "127.0.0.3"
port = 587
from = "jf@example.org"
starttls = true
user = "jf"
password = "mail-secret"
timeout = 3.0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return path


def test_every_setting_is_read_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, EVERY_SETTING.format(data=tmp_path))
    assert set(read_file(path)) == set(SETTINGS) - {"metrics_token_file", "smtp.password_file"}
    s = load(path)
    assert (s.data_dir, s.host, s.port) == (tmp_path, "127.0.0.2", 9001)
    assert s.database_url == "postgresql+asyncpg://jf@db/jf"
    assert s.redis_url == "redis://redis:6379/1"
    assert s.node_ttl == 4.0
    assert (s.log_level, s.log_format, s.heartbeat) == ("debug", "json", 4.5)
    assert s.max_file_size == 1048576
    assert (s.tls_cert, s.tls_key) == (tmp_path / "cert.pem", tmp_path / "key.pem")
    assert (s.agent_port, s.agent_plaintext, s.bootstrap_token_ttl) == (9443, True, 7200)
    assert s.callback_allow == ["127.0.0.0/8", "::1"]
    assert s.public_url == "http://127.0.0.1:8080"
    assert s.cookie_secure == "always"
    assert s.metrics_token == "m-token"
    assert (s.max_body, s.header_timeout, s.body_timeout, s.idle_timeout) == (4096, 3, 4, 5)
    assert (s.max_pending_connections, s.max_api_requests) == (6, 7)
    assert (s.enroll_rate, s.enroll_burst) == (8.5, 9)
    assert (s.auth_failure_rate, s.auth_failure_burst) == (0.5, 11)
    assert (s.dangerous_rule_time, s.dangerous_check_time) == (0.5, 3)
    e = s.engine
    assert (e.agent_lost_grace, e.recovery_window, e.timeout_slack) == (1.5, 2.5, 3.5)
    assert (e.lease_ttl, e.lease_renew, e.reconcile_interval) == (4.5, 1.25, 0.5)
    assert e.driver_stall == 45.0
    assert (e.terminate_wait, e.max_output, e.max_output_bytes) == (6.5, 2048, 4096)
    assert (e.refusal_audit_window, e.max_timeout, e.callback_attempts) == (7.5, 100, 3)
    assert (e.callback_backoff, e.callback_backoff_max, e.callback_timeout) == (0.25, 9, 2)
    assert e.callback_per_receiver == 2
    assert (e.cron_tick, e.cron_grace, e.cron_time_scale) == (0.75, 30, 60)
    assert e.presence_batch == 0.05
    r = s.retention
    assert (r.jobs, r.audit, r.blobs, r.interval, r.batch, r.pause) == (
        43200, 0, 86400, 600, 50, 0.5)
    assert r.heal == 2 * 86400
    assert s.smtp is not None
    assert (s.smtp.host, s.smtp.port, s.smtp.sender) == ("127.0.0.3", 587, "jf@example.org")
    assert (s.smtp.starttls, s.smtp.username, s.smtp.password) == (True, "jf", "mail-secret")
    assert s.smtp.timeout == 3.0


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, EVERY_SETTING.format(data=tmp_path))
    s = load(path, {"--port": 9100, "--retain-jobs": "3d", "--agent-lost-grace": 7.0,
                    "--smtp-host": "127.0.0.4", "--callback-allow": ["127.0.5.0/24"],
                    "--agent-plaintext": False, "--redis-url": "redis://other:6380/0",
                    "--retain-heal": "12h"})
    assert s.port == 9100
    assert s.retention.jobs == 3 * 86400
    assert s.retention.heal == 12 * 3600
    assert s.retention.audit == 0  # from the file still
    assert s.engine.agent_lost_grace == 7.0
    assert s.engine.recovery_window == 2.5
    assert s.smtp is not None and (s.smtp.host, s.smtp.port) == ("127.0.0.4", 587)
    assert s.callback_allow == ["127.0.5.0/24"]
    assert s.agent_plaintext is False
    assert s.redis_url == "redis://other:6380/0"


def test_without_a_file_the_flags_and_defaults_make_the_settings(tmp_path: Path) -> None:
    s = load(None, {"--data-dir": tmp_path})
    assert (s.data_dir, s.port, s.agent_port, s.smtp) == (tmp_path, 8080, 8443, None)
    assert (s.retention.jobs, s.bootstrap_token_ttl) == (90 * 86400, 86400)
    with pytest.raises(ConfigError, match="--data-dir"):
        load(None, {"--port": 1})


@pytest.mark.parametrize(("text", "named"), [
    ("prot = 80\n", r"server\.toml: unknown setting 'prot' \(did you mean 'port'\?\)"),
    ("[engine]\nlease_tll = 3\n", r"server\.toml: unknown setting 'engine\.lease_tll'"),
    ("[smtp]\nhost = 'm'\nsender = 'x'\n", r"server\.toml: unknown setting 'smtp\.sender'"),
    ("[cluster]\nnodes = 3\n", r"server\.toml: unknown setting 'cluster'"),
])
def test_an_unknown_key_is_refused_with_its_name_and_file(
        tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, f'data_dir = "{tmp_path}"\n' + text)
    with pytest.raises(ConfigError, match=named):
        load(path)


@pytest.mark.parametrize(("text", "named"), [
    ('port = "8080"\n', r"server\.toml: port \('8080'\): must be an integer, not a string"),
    ("port = 70000\n", r"server\.toml: port \(70000\): must be at most 65535"),
    ("agent_plaintext = 1\n", r"agent_plaintext \(1\): must be true or false"),
    ("heartbeat = true\n", r"heartbeat \(True\): must be a number"),
    ('log_format = "xml"\n', r"log_format \('xml'\): must be one of text, json"),
    ('bootstrap_token_ttl = "soon"\n', r"bootstrap_token_ttl .* is not a duration"),
    ('callback_allow = "127.0.0.0/8"\n', r"callback_allow .*must be a list of CIDR"),
    ('callback_allow = ["127.0.0.300/8"]\n', r"callback_allow .*not an IP address or CIDR"),
    ('public_url = "localhost:8080"\n', r"public_url .*must be an http\(s\) URL"),
    # shorter than a beat and a half of the bus, a merely slow node would be held gone
    ("node_ttl = 2\n", r"node_ttl \(2\): must be at least 3"),
    ("engine = 3\n", r"server\.toml: \[engine\] must be a table"),
    ("[engine]\nlease_ttl = 0\n", r"engine\.lease_ttl \(0\): must be at least"),
    ("[retention]\njobs = -1\n", r"retention\.jobs \(-1\): -1 must be 0 or more"),
    # a batch is listed in one statement: PostgreSQL's driver takes 32,767 arguments
    ("[retention]\nbatch = 40000\n", r"retention\.batch \(40000\): must be at most 10000"),
    ('bootstrap_token_ttl = "0"\n', r"bootstrap_token_ttl \('0'\): '0' must be more than 0"),
    ("[smtp]\nport = 'x'\n", r"smtp\.port \('x'\): must be an integer"),
])
def test_a_value_of_the_wrong_type_is_refused_with_its_name_and_file(
        tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, f'data_dir = "{tmp_path}"\n' + text)
    with pytest.raises(ConfigError, match=named):
        load(path)


def test_a_bad_flag_is_named_and_secrets_are_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--retain-jobs \('forever'\): "):
        load(None, {"--data-dir": tmp_path, "--retain-jobs": "forever"})
    path = write(tmp_path, f'data_dir = "{tmp_path}"\n[smtp]\npassword = 12345678\n')
    with pytest.raises(ConfigError, match=r"smtp\.password") as caught:
        load(path)
    assert "12345678" not in str(caught.value)


def test_not_toml_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load(write(tmp_path, "port = = 3\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.toml")


def test_secrets_from_files_must_not_be_readable_by_everyone(tmp_path: Path) -> None:
    token, password = tmp_path / "metrics.token", tmp_path / "smtp.password"
    token.write_text("scrape-me\n")
    password.write_text("mail-pass\n")
    token.chmod(0o640)
    password.chmod(0o600)
    path = write(tmp_path, f'data_dir = "{tmp_path}"\nmetrics_token_file = "{token}"\n'
                           f'[smtp]\nhost = "m"\npassword_file = "{password}"\n')
    s = load(path)
    assert s.metrics_token == "scrape-me"
    assert s.smtp is not None and s.smtp.password == "mail-pass"
    token.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by every user"):
        load(path)


def test_tls_cert_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        load(None, {"--data-dir": tmp_path, "--tls-cert": tmp_path / "c.pem"})


def test_the_example_file_lists_every_setting_and_loads() -> None:
    section, listed = "", set()
    for line in EXAMPLE.read_text().splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line.strip()):
            section = m.group(1) + "."
        elif m := re.match(r"#? ?([a-z_]+) = ", line):
            listed.add(section + m.group(1))
    assert listed == set(SETTINGS)
    assert load(EXAMPLE).port == 8080


def test_version_flags() -> None:
    runner = CliRunner()
    for args in (["--version"], ["server", "--version"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"jobfleet {__version__}"


def test_the_server_command_refuses_a_bad_file_before_starting(tmp_path: Path) -> None:
    path = write(tmp_path, f'data_dir = "{tmp_path}"\nport = "x"\n')
    result = CliRunner().invoke(app, ["server", "--config", str(path)])
    assert result.exit_code == 2
    assert "server.toml: port ('x'): must be an integer" in result.output


def test_every_field_of_the_settings_has_a_key() -> None:
    """A setting added to ServerSettings, EngineSettings or RetentionSettings must be
    given a key here, or the configuration file cannot set it."""
    import dataclasses

    from jobfleet.engine.retention import RetentionSettings
    from jobfleet.server import ServerSettings

    nested = {"engine", "retention", "smtp"}
    fields = {f.name for f in dataclasses.fields(ServerSettings)} - nested
    fields |= {f"retention.{f.name}" for f in dataclasses.fields(RetentionSettings)}
    assert fields <= set(SETTINGS)


def test_cookie_secure_is_auto_always_or_never(tmp_path: Path) -> None:
    """Behind a proxy that ends TLS the server sees plain HTTP: the operator says whether
    the console's session cookie is marked Secure."""
    assert load(None, {"--data-dir": str(tmp_path)}).cookie_secure == "auto"
    for value in ("auto", "always", "NEVER"):
        given = load(None, {"--data-dir": str(tmp_path), "--cookie-secure": value})
        assert given.cookie_secure == value.lower()
    with pytest.raises(ConfigError, match=r"--cookie-secure .*one of auto, always, never"):
        load(None, {"--data-dir": str(tmp_path), "--cookie-secure": "yes"})


def test_a_cluster_nodes_bus_holds_a_silent_node_gone_after_node_ttl(tmp_path: Path) -> None:
    """``node_ttl`` reaches the bus between nodes (nothing connects to Redis here)."""
    from jobfleet.server import Server, ServerSettings

    path = write(tmp_path, f'data_dir = "{tmp_path}"\nredis_url = "redis://127.0.0.1:1/0"\n'
                           "node_ttl = 4.5\n")
    server = Server(load(path))
    assert type(server.bus).__name__ == "RedisBus"
    assert server.bus.node_ttl == 4.5  # type: ignore[attr-defined]
    assert ServerSettings(data_dir=tmp_path).node_ttl == 10.0
