from datetime import datetime

from jobfleet.domain.paths import LOCAL_SOURCE, expand_path, source_label, stays_below

WHEN = datetime(2026, 11, 21, 9, 5, 7, 42000)


def test_filesrcip_is_cloud_underscore_ip() -> None:
    assert source_label(0, "127.0.0.1") == "0_127.0.0.1"
    assert source_label(2, "::1") == "2___1"
    path = "/data/extract/t1/[FILESRCIP]/"
    assert expand_path(path, source=source_label(0, "127.0.0.1"), when=WHEN) == \
        "/data/extract/t1/0_127.0.0.1/"
    assert expand_path(path, source=LOCAL_SOURCE, when=WHEN) == "/data/extract/t1/0_0.0.0.0/"


def test_date_variables() -> None:
    assert expand_path("/b/[DATE:yyyy-MM-dd]/x", source=None, when=WHEN) == "/b/2026-11-21/x"
    assert expand_path("/b/[DATE:yyyyMMddHHmmss.SSS]", source=None, when=WHEN) == \
        "/b/20261121090507.042"
    assert expand_path("/b/[DATE:qqq]", source=None, when=WHEN) == "/b/[DATE:qqq]"
    assert expand_path("/b/[DATEFMT:%Y/%m]", source=None, when=WHEN) == "/b/2026/11"
    assert expand_path("/keep/[FILESRCIP]", source=None, when=WHEN) == "/keep/[FILESRCIP]"


def test_a_listed_name_stays_below_the_target_directory() -> None:
    assert stays_below("a.txt") and stays_below("conf/sub/b.conf") and stays_below("..x")
    for rel in ("", ".", "..", "../x", "a/../../x", "/etc/x", "a//b", "a/./b", "a/", "a\0b"):
        assert not stays_below(rel), rel
