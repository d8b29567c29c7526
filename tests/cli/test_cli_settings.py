"""Global options: flag > env > bootstrap > config file > default; secrets stay hidden."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from typer.testing import CliRunner

from jobfleet.cli import _client
from jobfleet.cli._settings import Settings, SettingsError, resolve_settings
from jobfleet.cli.main import app
from jobfleet.sdk import JobClient

if TYPE_CHECKING:
    from conftest import Cli, FakeServer


def write_config(path: Path, **values: object) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_bootstrap(path: Path, **values: object) -> Path:
    path.write_text(json.dumps(values))
    return path


def settings_of(server: FakeServer) -> Settings:
    assert server.settings is not None
    return server.settings


def test_defaults(cli: Cli, server: FakeServer) -> None:
    assert cli.bare("whoami").exit_code == 0
    s = settings_of(server)
    assert (s.server, s.app_code, s.app_secret, s.username, s.biz) == (
        "http://127.0.0.1:8080",
        None,
        None,
        "admin",
        2,
    )


def test_each_layer_wins_over_the_ones_below(cli: Cli, server: FakeServer, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.toml",
        server="http://127.0.0.11:1",
        app_code="cfg-app",
        app_secret="cfg-secret",
        username="cfg-user",
        biz=11,
    )
    bootstrap = write_bootstrap(
        tmp_path / "bootstrap.json",
        url="http://127.0.0.12:2",
        bk_app_code="boot-app",
        bk_app_secret="boot-secret",
        admin_user="boot-user",
        enroll_token="tok",
    )
    env = {
        "JOBFLEET_CONFIG": str(config),
        "JOBFLEET_BOOTSTRAP": str(bootstrap),
        "JOBFLEET_APP_CODE": "env-app",
        "JOBFLEET_USERNAME": "env-user",
    }
    result = cli.bare("--user", "flag-user", "whoami", env=env)
    assert result.exit_code == 0, result.output
    s = settings_of(server)
    assert s.username == "flag-user"  # flag over env
    assert s.app_code == "env-app"  # env over bootstrap
    # bootstrap over config
    assert (s.server, s.app_secret) == ("http://127.0.0.12:2", "boot-secret")
    assert s.biz == 11  # config over default
    assert s.sources == {
        "server": str(bootstrap),
        "app_code": "JOBFLEET_APP_CODE",
        "app_secret": str(bootstrap),
        "username": "--user",
        "biz": str(config),
        "token": "unset",
    }


def test_bootstrap_without_url_falls_back_to_config_server(
    cli: Cli, server: FakeServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.toml", server="http://127.0.0.11:1/")
    bootstrap = write_bootstrap(
        tmp_path / "b.json", bk_app_code="a", bk_app_secret="s", admin_user="root"
    )
    assert cli.bare("--config", str(config), "--bootstrap", str(bootstrap), "whoami").exit_code == 0
    s = settings_of(server)
    assert (s.server, s.app_code, s.username) == ("http://127.0.0.11:1", "a", "root")


def test_default_config_file_is_read_from_home(
    cli: Cli, server: FakeServer, tmp_path: Path
) -> None:
    home_config = tmp_path / "home" / ".config" / "jobfleet" / "config.toml"
    home_config.parent.mkdir(parents=True)
    write_config(home_config, biz=42, app_code="home-app", app_secret="x")
    assert cli.bare("whoami").exit_code == 0
    assert (settings_of(server).biz, settings_of(server).app_code) == (42, "home-app")


def test_env_biz_and_server(cli: Cli, server: FakeServer) -> None:
    env = {"JOBFLEET_BIZ": "9", "JOBFLEET_SERVER": "http://127.0.0.13:3"}
    assert cli("whoami", env=env).exit_code == 0
    assert (settings_of(server).biz, settings_of(server).server) == (9, "http://127.0.0.13:3")
    assert settings_of(server).sources["biz"] == "JOBFLEET_BIZ"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("server = [", "not valid TOML"),
        ("biz = 'two'", "biz must be a int"),
        ("app_code = 5", "app_code must be a str"),
        ("sever = 'http://127.0.0.1:1'", "unknown key 'sever' (did you mean 'server'?)"),
        ("[profile]\nserver = 'http://127.0.0.1:1'", "unknown key 'profile'"),
    ],
)
def test_bad_config_file_exits_2(
    cli: Cli, server: FakeServer, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(content)
    result = cli("--config", str(path), "whoami")
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_missing_explicit_files_exit_2(cli: Cli, server: FakeServer, tmp_path: Path) -> None:
    result = cli("--config", str(tmp_path / "nope.toml"), "whoami")
    assert result.exit_code == 2
    assert "cannot read config file" in result.stderr
    result = cli("--bootstrap", str(tmp_path / "nope.json"), "whoami")
    assert result.exit_code == 2
    assert "cannot read bootstrap file" in result.stderr


def test_bad_bootstrap_file_exits_2(cli: Cli, server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("[1]")
    result = cli("--bootstrap", str(path), "whoami")
    assert result.exit_code == 2
    assert "expected a JSON object" in result.stderr


def test_missing_credentials_exit_2_before_any_request(cli: Cli) -> None:
    # the real make_client: it refuses before building a client
    result = cli.bare("run", "-H", "127.0.0.1", "-c", "true")
    assert result.exit_code == 2
    assert "no credentials" in result.stderr
    assert "Traceback" not in result.output


def test_bad_config_does_not_break_help(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("server = [")
    result = cli.bare("--config", str(path), "run", "--help")
    assert result.exit_code == 0
    assert "--host" in result.stdout


def test_secret_is_never_printed(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("GET", "/whoami")] = {
        "app_code": "app",
        "username": "admin",
        "is_admin": True,
        "scopes": [{"scope_type": "biz", "scope_id": "2"}],
    }
    result = cli("whoami")
    assert result.exit_code == 0
    assert "topsecret" not in result.output
    assert "topsecret" not in repr(settings_of(server))
    assert "--app-secret" in result.stdout  # where the secret came from, not what it is
    assert "biz:2" in result.stdout
    help_text = cli.bare("--help", env={"JOBFLEET_APP_SECRET": "envsecret"}).output
    assert "envsecret" not in help_text


def test_resolve_settings_layers_directly(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", username="cfg")
    s = resolve_settings(
        {"biz": (5, "--biz"), "server": None},
        config=config,
        config_required=True,
        bootstrap=None,
    )
    assert (s.username, s.biz, s.sources["username"], s.sources["app_code"]) == (
        "cfg",
        5,
        str(config),
        "unset",
    )
    with pytest.raises(SettingsError):
        resolve_settings({}, config=tmp_path / "missing.toml", config_required=True, bootstrap=None)
    # a default config path that does not exist is simply skipped
    assert (
        resolve_settings(
            {}, config=tmp_path / "missing.toml", config_required=False, bootstrap=None
        ).biz
        == 2
    )


def test_a_personal_token_from_the_environment_replaces_app_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBFLEET_TOKEN", "jfp_secret")
    seen: list[httpx.Request] = []

    def whoami(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        data = {"app_code": "personal-token", "username": "dev", "is_admin": False, "scopes": []}
        return httpx.Response(200, json={"result": True, "code": 0, "data": data})

    real = _client.make_client

    def make_client(settings: Settings) -> JobClient:
        client = real(settings)
        client._http._transport = httpx.MockTransport(whoami)
        return client

    monkeypatch.setattr(_client, "make_client", make_client)
    result = CliRunner().invoke(app, ["whoami"])
    assert result.exit_code == 0, result.output
    assert seen[0].headers["authorization"] == "Bearer jfp_secret"
    assert "x-bkapi-authorization" not in seen[0].headers
    assert "JOBFLEET_TOKEN" in result.stdout and "jfp_secret" not in result.stdout


def test_a_bad_server_url_exits_2_without_a_traceback(cli: Cli) -> None:
    for url in ("http://[::1", "jobfleet.example:8080"):
        result = cli("--server", url, "hosts")
        assert result.exit_code == 2, result.output
        assert f"server URL {url!r}" in result.stderr
        assert not isinstance(result.exception, ValueError)


def test_whoami_with_a_token_says_the_user_comes_from_it(
    cli: Cli, server: FakeServer, tmp_path: Path
) -> None:
    server.admin_answers[("GET", "/whoami")] = {"app_code": "jobfleet-token", "username": "alice"}
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_text('{"bk_app_code": "jobfleet", "bk_app_secret": "s", "admin_user": "admin"}')
    env = {"JOBFLEET_TOKEN": "jfp_abc", "JOBFLEET_BOOTSTRAP": str(bootstrap)}
    result = cli.bare("whoami", env=env)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[0].strip(): line for line in result.stdout.splitlines()}
    assert "alice" in rows["user"] and "JOBFLEET_TOKEN" in rows["user"]
    assert "JOBFLEET_TOKEN" in rows["app"]
    assert "(not used)" in rows["app secret"] and "bootstrap" not in rows["app secret"]
    assert "jfp_abc" not in result.output


def test_a_broken_token_is_never_printed(cli: Cli) -> None:
    # httpx's error quoted the header, and with it the whole secret
    result = cli.bare("hosts", env={"JOBFLEET_TOKEN": "jfp_verysecret\r!"})
    assert result.exit_code == 2, result.output
    assert "verysecret" not in result.output
    assert "personal token" in result.stderr


def test_whoami_says_an_administrator_holds_every_business(cli: Cli,
                                                           server: FakeServer) -> None:
    """An administrator holds every business without a grant: "scopes -" read as none."""
    me = {"app_code": "jobfleet", "username": "admin", "is_admin": True, "scopes": [],
          "app": {"app_code": "jobfleet", "is_admin": True, "allowed_users": "any",
                  "allowed_biz": "any"}}
    server.admin_answers[("GET", "/whoami")] = me
    rows = {line.split("│")[0].strip(): line.split("│")[1].strip()
            for line in cli("whoami").stdout.splitlines() if "│" in line}
    assert rows["scopes"] == "every business (administrator)", rows
    # through an app limited to some businesses, those alone
    server.admin_answers[("GET", "/whoami")] = {**me, "app": {**me["app"],
                                                              "allowed_biz": [2, 3]}}
    rows = {line.split("│")[0].strip(): line.split("│")[1].strip()
            for line in cli("whoami").stdout.splitlines() if "│" in line}
    assert rows["scopes"] == "biz:2, biz:3 (administrator, limited by the app)", rows
