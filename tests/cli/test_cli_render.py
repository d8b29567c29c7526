"""The pure formatting helpers behind the tables."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from jobfleet.cli import _progress, _render
from jobfleet.cli._render import counted
from jobfleet.cli._scripts import language_for, parse_language
from jobfleet.cli.topo import topology_tree
from jobfleet.sdk import ExecutionResult, HostResult


def render(renderable: object) -> str:
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_log_excerpt_keeps_last_three_non_empty_lines_truncated() -> None:
    log = "one\n\ntwo\n  \nthree\n" + "x" * 300 + "\n\n"
    excerpt = _render.log_excerpt(log)
    lines = excerpt.split("\n")
    assert lines[:2] == ["two", "three"]
    assert len(lines[2]) == _render.EXCERPT_WIDTH and lines[2].endswith("…")
    assert _render.log_excerpt("") == ""


@pytest.mark.parametrize(
    ("seconds", "text"),
    # a job of 40 ms did not take "0.0s"
    [(0.04, "40ms"), (0.25, "250ms"), (0.9996, "1.0s"), (1.25, "1.2s"), (59.94, "59.9s"),
     (61, "1m01s"), (3725, "1h02m05s"),
     # an end before its start is clock skew, never "-3ms" or "-1h…"
     (-0.003, "0ms"), (-3725, "0ms"), (float("nan"), "-"), (float("-inf"), "-")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert _render.format_duration(seconds) == text


def test_format_time_accepts_ms_seconds_iso_and_nothing() -> None:
    assert _render.format_time(None) == "-"
    assert _render.format_time(1_700_000_000_000) == _render.format_time(1_700_000_000)
    assert _render.format_time("2024-01-02T03:04:05") == "2024-01-02 03:04:05"
    assert _render.format_time("yesterday") == "yesterday"


def test_host_table_groups_by_status_failures_last_and_escapes_markup() -> None:
    hosts = [
        HostResult(1, "127.0.0.3", 0, 104, 1, log="[bold]boom[/bold]\n"),
        HostResult(2, "127.0.0.1", 0, 9, 0, log="ok\n"),
        HostResult(3, "127.0.0.2", 1, 9, 0, log="ok\n"),
        HostResult(4, "127.0.0.4", 0, 1, None),
        HostResult(5, "127.0.0.5", 0, 7, None),
        HostResult(6, "127.0.0.6", 0, 999, None),
    ]
    text = render(_render.host_table(hosts))
    order = [
        text.index(s)
        for s in (
            "Success (2)",
            "Running (1)",
            "Unknown error (1)",
            "Agent abnormal (1)",
            "Script exit code non-zero (1)",
        )
    ]
    assert order == sorted(order)
    assert "1:127.0.0.2" in text
    assert "[bold]boom[/bold]" in text


def test_result_summary_wording() -> None:
    result = ExecutionResult(5, 6, 2, False, [HostResult(1, "127.0.0.1", 0, 7, None)])
    assert render(_render.result_summary(result)).strip() == "… job 5 running · 0/1 host done"
    result = ExecutionResult(5, 6, 3, True, [HostResult(1, "127.0.0.1", 0, 9, 0)])
    assert render(_render.result_summary(result, 2.0)).strip() == (
        "✔ job 5 succeeded · 1/1 host done · 2.0s"
    )


def test_result_summary_of_a_job_with_no_hosts_yet() -> None:
    result = ExecutionResult(5, 6, 1, False, [])
    assert render(_render.result_summary(result)).strip() == "… job 5 waiting · no hosts yet"
    failed = ExecutionResult(5, 6, 4, True, [HostResult(1, "127.0.0.1", 0, 4, 1)])
    assert "· 1 of 1 host failed" in render(_render.result_summary(failed))


def test_topology_tree_counts_one_host_as_one() -> None:
    data = {
        "bk_biz_id": 2,
        "sets": [
            {"name": "web", "id": 1, "modules": [{"name": "nginx", "id": 3, "host_ids": [7]}]}
        ],
        "idle_host_ids": [8],
        "hosts": [{"bk_host_id": 7, "ip": "127.0.0.7"}, {"bk_host_id": 8, "ip": "127.0.0.8"}],
    }
    text = render(topology_tree(data))
    assert "(id 3, 1 host)" in text and "idle  (1 host in no module)" in text


def test_language_names_numbers_and_extensions() -> None:
    assert parse_language("PowerShell") == 5
    assert parse_language("bash") == 1
    assert parse_language("4") == 4
    assert language_for("/x/deploy.PY") == 4
    assert language_for("run.bat") == 2
    assert language_for("Makefile") == 1
    for bad in ("6", "0", "ruby"):
        with pytest.raises(Exception, match="use one of"):
            parse_language(bad)


def test_progress_bar_draws_on_a_terminal_and_is_silent_elsewhere() -> None:
    from jobfleet.sdk import JobProgress

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with _progress.RunProgress(console) as bar:
        bar.update(JobProgress(77, 2, 10, 4, 1, 3, 0.5, False))
        bar.update(JobProgress(77, 4, 10, 10, 2, 0, 1.0, True))
    assert "job 77" in buffer.getvalue()

    quiet = io.StringIO()
    with _progress.RunProgress(Console(file=quiet)) as bar:
        bar.update(JobProgress(77, 2, 10, 4, 1, 3, 0.5, False))
    assert quiet.getvalue() == ""


def test_logs_header_shows_cloud_when_not_default() -> None:
    written = io.StringIO()
    console = Console(file=written, width=100)
    _render.print_host_logs(console, [HostResult(1, "127.0.0.4", 3, 9, 0, log="ok\n")])
    assert written.getvalue() == "== 3:127.0.0.4 (Success, exit 0) ==\nok\n"


def test_hosts_within_a_status_come_in_host_id_order() -> None:
    """As the console and the SDK list a step's hosts (the server's order), not by
    address; hosts named by address only after them, by address."""
    hosts = [HostResult(i, ip, 0, 9, 0) for i, ip in
             ((3, "127.0.0.1"), (1, "127.0.0.10"), (2, "127.0.0.9"))]
    hosts += [HostResult(None, "127.0.0.20", 0, 9, 0), HostResult(None, "127.0.0.3", 0, 9, 0)]
    text = render(_render.host_table(hosts, logs=False))
    positions = [text.index(f"127.0.0.{i} ") for i in (10, 9, 1, 3, 20)]
    assert positions == sorted(positions)


def test_logs_come_in_the_host_tables_order() -> None:
    """``jobfleet logs`` lists hosts as ``status`` does: successes first, failures last,
    by host id within each, whatever order the server answered in."""
    hosts = [HostResult(3, "127.0.0.10", 0, 9, 0, log="a\n"),
             HostResult(1, "127.0.0.3", 0, 104, 1, log="b\n"),
             HostResult(4, "127.0.0.9", 0, 9, 0, log="c\n"),
             HostResult(2, "127.0.0.2", 0, 104, 1, log="d\n")]
    written = io.StringIO()
    _render.print_host_logs(Console(file=written, width=100), hosts)
    headers = [line.split()[1] for line in written.getvalue().splitlines()
               if line.startswith("==")]
    assert headers == ["127.0.0.10", "127.0.0.9", "127.0.0.3", "127.0.0.2"]


def test_transfer_table_comes_in_the_host_tables_order() -> None:
    hosts = [HostResult(2, "127.0.0.1", 0, 9, 0), HostResult(1, "127.0.0.2", 0, 9, 0),
             HostResult(3, "127.0.0.3", 0, 104, 1)]
    text = render(_render.transfer_table(hosts))
    positions = [text.index(f"127.0.0.{i} ") for i in (2, 1, 3)]
    assert positions == sorted(positions)


def test_a_lists_footer_counts_a_part_of_a_total_and_irregular_plurals() -> None:
    assert counted(1, "cron").plain == "1 cron"
    assert counted(3, "cron").plain == "3 crons"
    assert counted(20, "job", of=75).plain == "20 of 75 jobs"
    assert counted(1, "job", of=1).plain == "1 of 1 job"
    assert counted(2, "entry", plural="entries").plain == "2 entries"
    assert counted(1, "entry", plural="entries").plain == "1 entry"
    assert counted(4, "host", ", 3 alive").plain == "4 hosts, 3 alive"
