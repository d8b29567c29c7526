"""``--group``, ``--module``, ``--set`` and ``--label``: what ``run`` and ``push`` submit."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from jobfleet.cli import _targets

if TYPE_CHECKING:
    from conftest import Cli, FakeServer

TOPOLOGY = {
    "bk_biz_id": 2,
    "sets": [
        {
            "id": 10,
            "name": "web",
            "modules": [{"id": 11, "name": "nginx"}, {"id": 12, "name": "app"}],
        },
        {"id": 20, "name": "db", "modules": [{"id": 21, "name": "app"}]},
    ],
}
GROUPS = [
    {"id": "g-prod", "name": "prod"},
    {"id": "g-a", "name": "twice"},
    {"id": "g-b", "name": "twice"},
]


@pytest.fixture
def topo(server: FakeServer) -> FakeServer:
    server.admin_answers[("GET", "/topology")] = TOPOLOGY
    server.admin_answers[("GET", "/dynamic-groups")] = GROUPS
    server.admin_answers[("POST", "/dynamic-groups/preview")] = {
        "total": 2,
        "hosts": [{"bk_host_id": 1, "ip": "127.0.0.1"}, {"bk_host_id": 2, "ip": "127.0.0.2"}],
    }
    return server


def test_groups_modules_sets_and_labels_go_to_the_target(cli: Cli, topo: FakeServer) -> None:
    result = cli(
        "run", "-c", "uptime", "--host", "127.0.0.9",
        "--group", "prod", "--group", "g-a",
        "--module", "nginx", "--module", "db/app", "--module", "12",
        "--set", "db",
        "--label", "env=prod", "--label", "role=web",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    target = topo.submitted["target_server"]
    assert target["ip_list"] == [{"bk_cloud_id": 0, "ip": "127.0.0.9"}]
    assert target["dynamic_group_list"] == [{"id": "g-prod"}, {"id": "g-a"}]
    assert target["topo_node_list"] == [
        {"node_type": "set", "id": 20},
        {"node_type": "module", "id": 11},
        {"node_type": "module", "id": 21},
        {"node_type": "module", "id": 12},
    ]
    assert target["host_id_list"] == [1, 2]
    preview = [r for r in topo.admin_requests() if r[1].startswith("/dynamic-groups/preview")]
    assert preview[0][2]["filter"] == [
        {"field": "labels.env", "op": "equal", "value": "prod"},
        {"field": "labels.role", "op": "equal", "value": "web"},
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--group", "twice"], "dynamic group 'twice' is ambiguous in business 2: g-a (twice)"),
        (["--group", "nope"], "no dynamic group 'nope' in business 2"),
        (["--module", "app"], "module 'app' is ambiguous in business 2: 12 (web/app), 21 (db/app)"),
        (["--module", "web/db"], "no module 'web/db' in business 2"),
        (["--set", "99"], "no set '99' in business 2"),
        (["--label", "env"], "--label 'env': write it KEY=VALUE"),
    ],
)
def test_unknown_or_ambiguous_names_exit_2(
    cli: Cli, topo: FakeServer, args: list[str], message: str
) -> None:
    result = cli("run", "-c", "true", *args)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert not topo.submitted


def test_labels_that_match_no_host_exit_2(cli: Cli, topo: FakeServer) -> None:
    topo.admin_answers[("POST", "/dynamic-groups/preview")] = {"total": 0, "hosts": []}
    result = cli("run", "-c", "true", "--label", "env=nowhere")
    assert result.exit_code == 2
    assert "no host of business 2 has label env=nowhere" in result.stderr


def test_no_target_at_all_is_a_usage_error(cli: Cli, server: FakeServer) -> None:
    result = cli("run", "-c", "true")
    assert result.exit_code == 2
    assert "--group" in result.output


def test_selection_is_empty_without_options() -> None:
    assert not _targets.selection(None, None, None, None)
    assert _targets.selection(None, ["m"], None, None)
