"""``from_env``: the CLI's settings, layer over layer, for both clients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobfleet.sdk import AsyncJobClient, JobClient, JobConfigError


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("JOBFLEET_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_environment_over_bootstrap_over_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('server = "http://127.0.0.11:1"\nusername = "carol"\nbiz = 7\n'
                      'app_code = "cfg"\napp_secret = "cfg-secret"\n')  # fmt: skip
    boot = tmp_path / "bootstrap.json"
    boot.write_text(json.dumps({"url": "http://127.0.0.12:2", "bk_app_code": "boot",
                                "bk_app_secret": "boot-secret", "admin_user": ""}))  # fmt: skip
    monkeypatch.setenv("JOBFLEET_CONFIG", str(config))
    monkeypatch.setenv("JOBFLEET_BOOTSTRAP", str(boot))
    monkeypatch.setenv("JOBFLEET_APP_CODE", "env")
    with JobClient.from_env() as client:
        assert client.base_url == "http://127.0.0.12:2"
        assert client.credentials.app_code == "env"
        assert client.credentials.app_secret == "boot-secret"
        assert client.credentials.username == "carol"
        assert client.biz == 7


async def test_a_token_needs_no_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBFLEET_TOKEN", "jfp_x")
    monkeypatch.setenv("JOBFLEET_SERVER", "http://127.0.0.13:3")
    async with AsyncJobClient.from_env() as client:
        assert client.base_url == "http://127.0.0.13:3"
        assert client._http.headers["authorization"] == "Bearer jfp_x"
        assert "x-bkapi-authorization" not in client._http.headers


def test_nothing_to_authenticate_with_says_what_to_set() -> None:
    with pytest.raises(ValueError, match="JOBFLEET_TOKEN"):
        JobClient.from_env()


@pytest.mark.parametrize(
    ("variable", "name", "content", "says"),
    [
        ("JOBFLEET_BOOTSTRAP", "missing.json", None, "cannot read bootstrap file"),
        ("JOBFLEET_BOOTSTRAP", "bootstrap.json", "{not json", "is not valid JSON"),
        ("JOBFLEET_BOOTSTRAP", "bootstrap.json", "[1, 2]", "expected a JSON object"),
        ("JOBFLEET_BOOTSTRAP", "bootstrap.json", '{"bk_app_code": 5}', "must be a string"),
        ("JOBFLEET_CONFIG", "missing.toml", None, "cannot read config file"),
        ("JOBFLEET_CONFIG", "c.toml", "server = [", "is not valid TOML"),
        ("JOBFLEET_CONFIG", "c.toml", "biz = 'two'", "biz must be"),
    ],
)
def test_a_missing_or_broken_file_is_a_configuration_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    variable: str,
    name: str,
    content: str | None,
    says: str,
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv(variable, str(path))
    monkeypatch.setenv("JOBFLEET_TOKEN", "jfp_x")
    for client in (JobClient, AsyncJobClient):
        with pytest.raises(JobConfigError) as caught:
            client.from_env()
        assert str(path) in str(caught.value) and says in str(caught.value)


def test_a_missing_default_config_file_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBFLEET_TOKEN", "jfp_x")
    with JobClient.from_env() as client:
        assert client.base_url == "http://127.0.0.1:8080"


def test_no_credentials_is_a_configuration_error() -> None:
    # a ValueError still, as it always was
    with pytest.raises(JobConfigError, match="JOBFLEET_TOKEN"):
        JobClient.from_env()
