"""One log format for every record: jobfleet's ``event key=value`` and uvicorn's text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from jobfleet import logs


@pytest.fixture(autouse=True)
def root_logger() -> Iterator[None]:
    """``setup`` rebuilds the root logger: give the rest of the suite its own back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(fmt: str, logger: str, message: str, *args: object) -> str:
    stream = io.StringIO()
    logs.setup("debug", fmt)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        logging.getLogger(logger).info(message, *args)
    finally:
        logging.getLogger().removeHandler(handler)
    return stream.getvalue()


def test_json_lines_carry_the_fields_of_the_message() -> None:
    line = emit("json", "jobfleet.server", "server_started node=%s url=%s agent_port=%d",
                "ab12", "http://127.0.0.1:8080", 8443)
    entry = json.loads(line)
    assert entry["level"] == "info" and entry["logger"] == "jobfleet.server"
    assert entry["message"] == "server_started"
    assert (entry["node"], entry["url"], entry["agent_port"]) == (
        "ab12", "http://127.0.0.1:8080", "8443")
    assert entry["time"].endswith("Z")


def test_uvicorn_text_stays_whole_in_message() -> None:
    uvicorn_error = logging.getLogger("uvicorn.error")
    level = uvicorn_error.level
    uvicorn_error.setLevel(logging.WARNING)  # as an earlier uvicorn.Config left it
    try:
        line = emit("json", "uvicorn.error", "Started server process [%d]", 42)
    finally:
        uvicorn_error.setLevel(level)
    entry = json.loads(line)
    assert entry == {**entry, "logger": "uvicorn.error",
                     "message": "Started server process [42]"}


def test_a_value_may_hold_spaces_and_a_field_may_not_shadow_the_frame() -> None:
    event, fields = logs.parse("bootstrap_skipped reason=another node did it; see x level=3")
    assert event == "bootstrap_skipped"
    assert fields == {"reason": "another node did it; see x", "level_": "3"}


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_secrets_are_masked_in_both_formats(fmt: str) -> None:
    out = emit(fmt, "jobfleet.x", "connect url=%s bk_app_secret=%s password=%s user=%s",
               "postgresql://jf:hunter2@db/jf", "s3cr3t", "pw", "bob")
    assert "hunter2" not in out and "s3cr3t" not in out and "=pw" not in out
    assert "bob" in out and "jf:***@db" in out


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        logs.setup("info", "xml")


def test_debug_shows_jobfleet_lines_but_not_the_libraries_dumps() -> None:
    """At debug, libraries dump what they carry: uvicorn and websockets every handshake
    header (an agent's ``Authorization``) and frame, aiosqlite every statement with its
    parameters. Only jobfleet's own lines go down to debug."""
    stream = io.StringIO()
    logs.setup("debug", "text")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        logging.getLogger("uvicorn.error").debug("< authorization: Agent a1:CREDENTIAL")
        logging.getLogger("websockets.client").debug("> Authorization: Agent a1:CREDENTIAL")
        logging.getLogger("aiosqlite").debug("executing (..., ('CREDENTIAL',))")
        logging.getLogger("alembic.runtime.migration").debug("CREDENTIAL of a migration")
        logging.getLogger("jobfleet.gateway.endpoint").debug("frame_checked agent=a1")
        logging.getLogger("uvicorn.error").info("connection open")
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert "CREDENTIAL" not in text, text
    assert "frame_checked agent=a1" in text and "connection open" in text, text


def test_a_spell_reminds_once_a_minute_with_its_count_and_ends_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    log = logging.getLogger("test.spell")
    spell = logs.Spell(log, "thing_waiting", back="thing_back", every=60.0)
    with caplog.at_level(logging.INFO, logger="test.spell"):
        # a failure every 5 s for 130 s: 27 of them
        for _ in range(27):
            spell.failed("error=%s", "refused")
            clock[0] += 5.0
        spell.ok()
    assert [r.getMessage() for r in caplog.records] == [
        "thing_waiting error=refused",
        "thing_waiting for=60s failures=13 error=refused",
        "thing_waiting for=120s failures=25 error=refused",
        "thing_back after=135.0s failures=27",
    ]


def test_alembic_says_only_which_migrations_ran() -> None:
    """Every start, Alembic names seven plugins and twice its dialect at INFO: an
    operator reading the start-up lines needs only the migrations that ran."""
    out = "".join(
        emit("text", logger, message)
        for logger, message in (
            ("alembic.runtime.plugins", "setup plugin alembic.autogenerate.schemas"),
            ("alembic.runtime.migration", "Context impl SQLiteImpl."),
            ("alembic.runtime.migration", "Will assume non-transactional DDL."),
            ("alembic.runtime.migration", "Running upgrade 0023 -> 0024, step hosts ip"),
        )
    )
    assert out.count("\n") == 1, out
    assert "Running upgrade 0023 -> 0024" in out, out
