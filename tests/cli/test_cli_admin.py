"""``jobfleet admin …`` commands against the admin API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Cli, FakeServer


def test_app_create_prints_the_secret_once(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("POST", "/apps")] = {"app_code": "ci", "app_secret": "s-123"}
    result = cli("admin", "app", "create", "ci", "--description", "CI")
    assert result.exit_code == 0
    assert result.stdout == "app_code: ci\napp_secret: s-123\n"
    assert "cannot be shown again" in result.stderr
    assert server.admin_requests() == [("POST", "/apps", {"app_code": "ci", "description": "CI"})]


def test_app_create_with_restrictions(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("POST", "/apps")] = {"app_code": "ops", "app_secret": "s-1"}
    result = cli("admin", "app", "create", "ops", "--users", "alice, bob", "--biz", "2,3",
                 "--admin")
    assert result.exit_code == 0, result.stderr
    assert server.admin_requests() == [("POST", "/apps", {
        "app_code": "ops", "allowed_users": ["alice", "bob"], "allowed_biz": [2, 3],
        "is_admin": True})]
    for flag, value in (("--biz", "2,x"), ("--users", "a,,b")):
        refused = cli("admin", "app", "create", "bad", flag, value)
        assert refused.exit_code == 2 and flag in refused.stderr


def test_token_create_prints_only_the_token_on_stdout(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("POST", "/enroll-tokens")] = {"token": "tok-9"}
    result = cli("admin", "token", "create", "--biz", "3", "--uses", "10", "--ttl", "600")
    assert result.exit_code == 0
    assert result.stdout == "tok-9\n"
    assert server.admin_requests() == [
        ("POST", "/enroll-tokens", {"bk_biz_id": 3, "uses": 10, "ttl_seconds": 600})
    ]


@pytest.mark.parametrize(
    ("revoked", "said"),
    [(0, "no tokens of bob revoked: it had none"), (1, "revoked 1 token of bob"),
     (2, "revoked 2 tokens of bob")],
)
def test_revoking_every_token_counts_them_in_words(
    cli: Cli, server: FakeServer, revoked: int, said: str
) -> None:
    server.admin_answers[("DELETE", "/users/bob/tokens")] = {"username": "bob", "revoked": revoked}
    result = cli("admin", "user", "revoke-token", "bob", "--all")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == said


def test_token_lifetimes_read_as_operators_write_them(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("POST", "/enroll-tokens")] = {"token": "tok-9"}
    result = cli("admin", "token", "create", "--biz", "2", "--uses", "100", "--ttl", "24h")
    assert result.exit_code == 0
    assert server.admin_requests() == [
        ("POST", "/enroll-tokens", {"bk_biz_id": 2, "uses": 100, "ttl_seconds": 86400})
    ]
    refused = cli("admin", "token", "create", "--ttl", "soon")
    assert refused.exit_code == 2 and "30m, 24h or 7d" in refused.stderr

@pytest.mark.parametrize(
    ("args", "request_"),
    [
        (["app", "delete", "ci"], ("DELETE", "/apps/ci", None)),
        (["user", "create", "bob"], ("POST", "/users", {"username": "bob"})),
        (["user", "create", "bob", "--no-admin"],
         ("POST", "/users", {"username": "bob", "is_admin": False})),
        (
            ["user", "create", "eve", "--admin"],
            ("POST", "/users", {"username": "eve", "is_admin": True}),
        ),
        (
            ["user", "grant", "bob", "--biz", "3"],
            ("POST", "/users/bob/grants", {"scope_type": "biz", "scope_id": "3"}),
        ),
        (
            ["user", "grant", "bob", "--scope-type", "biz_set", "--scope-id", "9000001"],
            ("POST", "/users/bob/grants", {"scope_type": "biz_set", "scope_id": "9000001"}),
        ),
        (["user", "revoke", "bob", "--biz", "3"], ("DELETE", "/users/bob/grants/biz/3", None)),
        (["biz", "create", "3", "web"], ("POST", "/businesses", {"bk_biz_id": 3, "name": "web"})),
        (
            ["biz-set", "create", "9000001", "web", "--biz", "2", "--biz", "3"],
            ("POST", "/business-sets", {"bk_biz_set_id": 9000001, "name": "web",
                                        "bk_biz_ids": [2, 3]}),
        ),
        (
            ["host", "add", "127.0.0.5"],
            ("POST", "/hosts", {"bk_biz_id": 2, "ip": "127.0.0.5", "bk_cloud_id": 0}),
        ),
        (
            ["host", "add", "127.0.0.5", "--biz", "3", "--cloud", "1", "--hostname", "db"],
            (
                "POST",
                "/hosts",
                {"bk_biz_id": 3, "ip": "127.0.0.5", "bk_cloud_id": 1, "hostname": "db"},
            ),
        ),
        (["token", "create"], ("POST", "/enroll-tokens", {})),
        (["agent", "revoke", "ag-7"], ("DELETE", "/agents/ag-7", None)),
    ],
)
def test_admin_commands_send_the_documented_request(
    cli: Cli, server: FakeServer, args: list[str], request_: tuple[str, str, object]
) -> None:
    result = cli("admin", *args)
    assert result.exit_code == 0, result.output
    assert server.admin_requests() == [request_]


def test_passwd_names_the_user_whatever_the_name_holds(cli: Cli, server: FakeServer) -> None:
    # "/" and "#" in a name made the request set another user's password (carol's)
    server.admin_answers[("POST", "/users/carol%2Fpassword%23/password")] = {
        "username": "carol/password#"
    }
    result = cli("admin", "user", "passwd", "carol/password#", "--stdin", input="s3cret-pw\n")
    assert result.exit_code == 0, result.output
    assert server.admin_requests() == [
        ("POST", "/users/carol%2Fpassword%23/password", {"password": "s3cret-pw"})
    ]
    assert result.stdout == "password set for carol/password#\n"


@pytest.mark.parametrize(
    "args",
    [
        ["user", "grant", "bob"],
        ["user", "grant", "bob", "--biz", "3", "--scope-type", "biz"],
        ["user", "revoke", "bob", "--scope-id", "3"],
    ],
)
def test_grant_needs_exactly_one_scope_form(cli: Cli, server: FakeServer, args: list[str]) -> None:
    result = cli("admin", *args)
    assert result.exit_code == 2
    assert server.requests == []


def test_lists_render_tables(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("GET", "/apps")] = [
        {"app_code": "ci", "description": "CI", "disabled": False, "create_time": 1_700_000_000_000}
    ]
    server.admin_answers[("GET", "/users")] = [
        {"username": "bob", "is_admin": False, "scopes": [{"scope_type": "biz", "scope_id": "3"}]}
    ]
    server.admin_answers[("GET", "/businesses")] = [{"bk_biz_id": 3, "name": "web"}]
    apps = cli("admin", "app", "list")
    users = cli("admin", "user", "list")
    bizs = cli("admin", "biz", "list")
    assert apps.exit_code == users.exit_code == bizs.exit_code == 0
    assert "ci" in apps.stdout and "2023-11-1" in apps.stdout
    assert "bob" in users.stdout and "biz:3" in users.stdout
    assert "web" in bizs.stdout


def test_a_users_tokens_end_with_a_count_as_other_lists_do(
        cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("GET", "/users/alice/tokens")] = [
        {"id": 4, "note": "ci", "expires_at": None, "create_time": 1_700_000_000_000},
        {"id": 5, "note": "laptop", "expires_at": None, "create_time": 1_700_000_000_000},
    ]
    listed = cli("admin", "user", "tokens", "alice")
    assert listed.exit_code == 0, listed.output
    assert "laptop" in listed.stdout, listed.stdout
    assert listed.stdout.rstrip().endswith("\n2 tokens of alice"), listed.stdout


def test_admin_api_error_exits_2(cli: Cli, server: FakeServer) -> None:
    server.errors["/users"] = (1249409, "user bob exists")
    result = cli("admin", "user", "create", "bob")
    assert result.exit_code == 2
    assert "error 1249409: user bob exists" in result.stderr


def test_group_without_subcommand_shows_help(cli: Cli) -> None:
    result = cli("admin", "user")
    assert "grant" in result.output


def test_every_list_ends_with_its_count(cli: Cli, server: FakeServer) -> None:
    """The lists of apps, users, businesses and the rest end as jobs, hosts and crons do."""
    answers = {
        "/apps": [{"app_code": "ci"}, {"app_code": "cd"}],
        "/users": [{"username": "bob", "is_admin": False, "scopes": []}],
        "/businesses": [{"bk_biz_id": 3, "name": "web"}, {"bk_biz_id": 4, "name": "db"}],
        "/business-sets": [{"bk_biz_set_id": 9000001, "name": "all", "bk_biz_ids": [3]}],
        "/businesses/2/notify-configs": [],
        "/dynamic-groups": [
            {"id": "g1", "name": "web", "filter": [{"field": "hostname", "op": "prefix"}]}
        ],
        "/host-whitelist": [{"id": 1, "ip": "127.0.0.1"}, {"id": 2, "ip": "127.0.0.2"}],
        "/businesses/2/heal-rules": [{"id": 1, "name": "disk"}],
    }
    for path, rows in answers.items():
        server.admin_answers[("GET", path)] = rows
    for command, footer in (
        (["admin", "app", "list"], "2 apps"),
        (["admin", "user", "list"], "1 user"),
        (["admin", "biz", "list"], "2 businesses"),
        (["admin", "biz-set", "list"], "1 business set"),
        (["notify", "list", "--biz", "2"], "0 notification configs"),
        (["topo", "group", "list", "--biz", "2"], "1 dynamic group"),
        (["topo", "whitelist", "list"], "2 whitelist entries"),
        (["heal", "rules", "--biz", "2"], "1 rule"),
    ):
        result = cli(*command)
        assert result.exit_code == 0, (command, result.output)
        assert result.stdout.rstrip().endswith(f"\n{footer}"), (command, result.stdout)
        assert cli(*command, "--json").stdout.lstrip().startswith("["), command


def test_a_filters_matching_hosts_end_with_their_count(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("POST", "/dynamic-groups/preview")] = {
        "total": 3, "hosts": [{"bk_host_id": 1, "ip": "127.0.0.1", "alive": True}]}
    result = cli("topo", "group", "preview", "-w", "hostname prefix web-", "--biz", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith("\n1 of 3 matching hosts"), result.stdout
