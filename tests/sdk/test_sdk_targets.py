"""``Target``: dynamic groups and topology nodes next to IPs and host ids."""

from __future__ import annotations

import pytest

from jobfleet.sdk import Target, target_server


def test_target_server_merges_everything_once() -> None:
    target = Target(
        dynamic_groups=("g1", "g1", "g2"),
        topo_nodes=(("module", 11), ("set", 2), ("module", 11)),
        host_ids=(5, 7),
    )
    assert target_server(["127.0.0.1", "3:127.0.0.2"], [7, 9], 0, target) == {
        "host_id_list": [7, 9, 5],
        "dynamic_group_list": [{"id": "g1"}, {"id": "g2"}],
        "topo_node_list": [{"node_type": "module", "id": 11}, {"node_type": "set", "id": 2}],
        "ip_list": [{"bk_cloud_id": 0, "ip": "127.0.0.1"}, {"bk_cloud_id": 3, "ip": "127.0.0.2"}],
    }


def test_a_target_alone_is_enough() -> None:
    assert target_server(None, None, 0, Target(topo_nodes=(("module", 1),))) == {
        "topo_node_list": [{"node_type": "module", "id": 1}]
    }


def test_no_target_at_all_is_refused() -> None:
    assert not Target()
    with pytest.raises(ValueError, match="no target"):
        target_server(None, None, 0, Target())
