from datetime import datetime

import pytest

from jobfleet.domain.paths import (
    LOCAL_SOURCE,
    expand_path,
    listed_as_asked,
    source_label,
    stays_below,
)

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


@pytest.mark.parametrize(("patterns", "path", "rel", "asked"), [
    (["/srv/app.tar"], "/srv/app.tar", "app.tar", True),
    (["/srv/conf"], "/srv/conf/sub/b.conf", "conf/sub/b.conf", True),
    (["/srv/*.log"], "/srv/a.log", "a.log", True),
    (["/srv/*/x.log"], "/srv/a/x.log", "a/x.log", True),
    # a ".." after the wildcard climbs out, as the shell's glob does
    (["/srv/*/../../etc/f"], "/srv/a/../../etc/f", "f", True),
    (["/srv/REGEX:.*\\.log"], "/srv/a.log", "a.log", True),
    (["/srv/app.tar"], "/root/.ssh/authorized_keys", ".ssh/authorized_keys", False),
    (["/srv/app.tar"], "/srv/app.tar", ".ssh/authorized_keys", False),
    (["/srv/app.tar"], "/srv/other.tar", "other.tar", False),
    (["/srv/app"], "/srv/app.tar", "app.tar", False),
    (["/srv/*.log"], "/etc/shadow", "shadow", False),
    (["/srv/REGEX:.*"], "/etc/shadow", "shadow", False),
])
def test_a_listed_entry_is_one_the_patterns_name(
        patterns: list[str], path: str, rel: str, asked: bool) -> None:
    assert listed_as_asked(patterns, path, rel) is asked


@pytest.mark.parametrize(("patterns", "path", "rel"), [
    # an entry below the file asked for, named as if it were the target directory's own
    (["/srv/app.tar"], "/srv/app.tar/x", "x"),
    # a dot entry a wildcard does not match, a name its part does not match
    (["/srv/*"], "/srv/.ssh/authorized_keys", ".ssh/authorized_keys"),
    (["/srv/*.log"], "/srv/evil.sh", "evil.sh"),
])
def test_a_listed_entry_keeps_the_name_its_pattern_gives(
        patterns: list[str], path: str, rel: str) -> None:
    assert not listed_as_asked(patterns, path, rel)
