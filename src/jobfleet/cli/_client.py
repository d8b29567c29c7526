"""The one place the CLI builds its SDK client (tests replace ``make_client``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobfleet.cli._settings import Settings, SettingsError

if TYPE_CHECKING:
    from jobfleet.sdk import JobClient


def make_client(settings: Settings) -> JobClient:
    try:
        return _make_client(settings)
    except ValueError as exc:  # the server URL
        raise SettingsError(str(exc)) from None


def _make_client(settings: Settings) -> JobClient:
    # the client and httpx under it: for a command that talks to the server, once its
    # options are parsed (never for --help or a usage error)
    from jobfleet.sdk import JobClient

    if settings.token:
        return JobClient.with_token(settings.server, settings.token, biz=settings.biz)
    if not settings.app_code or not settings.app_secret:
        raise SettingsError(
            "no credentials: set JOBFLEET_TOKEN (a personal token), pass --app-code and "
            "--app-secret, set JOBFLEET_APP_CODE and JOBFLEET_APP_SECRET, point --bootstrap "
            "at the server's bootstrap.json, or put app_code and app_secret (or token) in "
            "the config file"
        )
    return JobClient(
        settings.server,
        settings.app_code,
        settings.app_secret,
        settings.username,
        biz=settings.biz,
    )
