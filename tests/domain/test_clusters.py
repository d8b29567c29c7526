"""Output clustering: addresses, names and numbers masked; outliers first."""

from __future__ import annotations

from jobfleet.domain.clusters import group_outputs, normalize


def test_outputs_differing_in_addresses_names_and_numbers_match() -> None:
    a = normalize("ok on 127.0.0.1 (web-01.example.com), load 0.52, pid 4242\n")
    b = normalize("ok on 127.0.0.17 (web-12.example.com), load 1.5, pid 7\n")
    assert a == b
    assert normalize("disk full on /data") != a


def test_smallest_groups_come_first() -> None:
    outputs = [(1, "ok 127.0.0.1"), (2, "ok 127.0.0.2"), (3, "disk full"), (4, "ok 127.0.0.4")]
    groups = group_outputs(outputs)
    assert [hosts for _key, hosts in groups] == [[3], [1, 2, 4]]
