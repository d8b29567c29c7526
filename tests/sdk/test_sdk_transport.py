"""Requests on the wire and the envelope → data / JobApiError mapping."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from jobfleet.sdk import AsyncJobClient, Credentials, JobApiError, JobClient
from jobfleet.sdk._transport import api_method, encode_query

Handler = Callable[[httpx.Request], httpx.Response]


def ok(data: Any) -> httpx.Response:
    return httpx.Response(200, json={"result": True, "code": 0, "data": data})


def client_for(
    handler: Handler, seen: list[httpx.Request], base_url: str = "http://jf.test:8080", **kw: Any
) -> JobClient:
    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return JobClient(
        base_url, "my-app", "s3cret", "alice", transport=httpx.MockTransport(record), **kw
    )


def error_from(handler: Handler, call: Callable[[JobClient], object]) -> JobApiError:
    with client_for(handler, []) as client, pytest.raises(JobApiError) as info:
        call(client)
    return info.value


def test_action_is_post_json_to_gateway_path_with_auth_header() -> None:
    seen: list[httpx.Request] = []
    with client_for(lambda r: ok({"job_instance_id": 1}), seen, biz=2) as client:
        data = client.fast_execute_script(script_content="ZWNobw==", script_language=1)

    assert data == {"job_instance_id": 1}
    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == "http://jf.test:8080/api/bk-job/prod/api/v3/fast_execute_script"
    assert json.loads(request.headers["X-Bkapi-Authorization"]) == {
        "bk_app_code": "my-app",
        "bk_app_secret": "s3cret",
        "bk_username": "alice",
    }
    assert json.loads(request.content) == {
        "script_content": "ZWNobw==",
        "script_language": 1,
        "bk_scope_type": "biz",
        "bk_scope_id": "2",
    }


def test_query_is_get_with_true_false_booleans() -> None:
    seen: list[httpx.Request] = []
    with client_for(lambda r: ok({"finished": True}), seen, biz=5) as client:
        client.get_job_instance_status(12, return_ip_result=True)
        client.get_job_instance_status(12, return_ip_result=False)

    assert seen[0].method == "GET"
    assert seen[0].url.path == "/api/bk-job/prod/api/v3/get_job_instance_status"
    assert seen[0].content == b""
    assert seen[0].url.params.multi_items() == [
        ("job_instance_id", "12"),
        ("return_ip_result", "true"),
        ("bk_scope_type", "biz"),
        ("bk_scope_id", "5"),
    ]
    assert seen[1].url.params["return_ip_result"] == "false"


def test_scope_given_by_caller_wins_over_client_default() -> None:
    seen: list[httpx.Request] = []
    with client_for(lambda r: ok({}), seen, biz=2) as client:
        client.get_job_instance_status(1, bk_biz_id=3)
        client.get_job_instance_status(1, bk_scope_type="biz_set", bk_scope_id=9_000_001)
        client.operate_job_instance(1, 1, bk_scope_type="biz", bk_scope_id="7")

    assert dict(seen[0].url.params) == {"job_instance_id": "1", "bk_biz_id": "3"}
    assert seen[1].url.params["bk_scope_id"] == "9000001"
    assert seen[1].url.params["bk_scope_type"] == "biz_set"
    assert json.loads(seen[2].content) == {
        "job_instance_id": 1,
        "operation_code": 1,
        "bk_scope_type": "biz",
        "bk_scope_id": "7",
    }


def test_no_default_biz_sends_no_scope() -> None:
    seen: list[httpx.Request] = []
    with client_for(lambda r: ok({}), seen) as client:
        client.get_job_instance_global_var_value(4)
    assert dict(seen[0].url.params) == {"job_instance_id": "4"}


def test_extra_params_pass_through() -> None:
    seen: list[httpx.Request] = []
    with client_for(lambda r: ok({}), seen) as client:
        client.fast_transfer_file(file_target_path="/tmp", new_field="x")
    assert json.loads(seen[0].content) == {"file_target_path": "/tmp", "new_field": "x"}


def test_batch_log_query_is_post_and_generic_call_picks_method() -> None:
    seen: list[httpx.Request] = []
    with client_for(lambda r: ok({"data": []}), seen) as client:
        client.batch_get_job_instance_ip_log(1, 2, host_id_list=[3, 4])
        client.call("get_dangerous_rule_list", {"action": 1})
        client.call("get_cron_list", {"start": 0, "length": 5})
        client.call("get_cron_list", {"id": 1}, method="POST")

    assert [(r.method, r.url.path.rsplit("/", 1)[1]) for r in seen] == [
        ("POST", "batch_get_job_instance_ip_log"),
        ("POST", "get_dangerous_rule_list"),
        ("GET", "get_cron_list"),
        ("POST", "get_cron_list"),
    ]
    assert json.loads(seen[0].content) == {
        "job_instance_id": 1,
        "step_instance_id": 2,
        "host_id_list": [3, 4],
    }
    assert dict(seen[2].url.params) == {"start": "0", "length": "5"}


def test_base_url_path_prefix_and_trailing_slash_are_kept() -> None:
    seen: list[httpx.Request] = []
    with client_for(lambda r: ok({}), seen, base_url="https://gw.test/jobfleet/") as client:
        client.get_job_plan_detail(3)
    assert str(seen[0].url).startswith(
        "https://gw.test/jobfleet/api/bk-job/prod/api/v3/get_job_plan_detail?"
    )


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("get_job_instance_list", "GET"),
        ("get_step_instance_status", "GET"),
        ("batch_get_job_instance_ip_log", "POST"),
        ("get_dangerous_rule_list", "POST"),
        ("save_cron", "POST"),
        ("callback_protocol", "GET"),
    ],
)
def test_api_method(name: str, method: str) -> None:
    assert api_method(name) == method


def test_encode_query_lists_repeat_and_structures_are_json() -> None:
    assert encode_query({"a": [1, 2], "b": {"x": 1}, "c": None, "d": False}) == [
        ("a", "1"),
        ("a", "2"),
        ("b", '{"x":1}'),
        ("d", "false"),
    ]


def test_business_error_maps_every_envelope_field() -> None:
    answer = {
        "result": False,
        "code": 9900403,
        "message": "No permission",
        "data": {"hint": 1},
        "permission": {"system_id": "bk_job", "actions": [{"id": "execute_script"}]},
        "job_request_id": "req-1",
    }
    err = error_from(
        lambda r: httpx.Response(200, json=answer), lambda c: c.get_job_instance_status(1)
    )
    assert (err.code, err.message, err.http_status, err.request_id) == (
        9900403,
        "No permission",
        200,
        "req-1",
    )
    assert err.data == {"hint": 1}
    assert err.permission == answer["permission"]
    assert str(err) == "[9900403] No permission"


def test_envelope_on_http_400_keeps_its_code() -> None:
    answer = {"result": False, "code": 1241001, "message": "Missing parameter"}
    err = error_from(
        lambda r: httpx.Response(400, json=answer), lambda c: c.call("fast_execute_script", {})
    )
    assert (err.code, err.http_status) == (1241001, 400)


def test_http_error_without_envelope_is_code_minus_one() -> None:
    html = "<html><body>404 Not Found</body></html>"
    err = error_from(
        lambda r: httpx.Response(404, text=html), lambda c: c.get_job_instance_status(1)
    )
    assert (err.code, err.http_status) == (-1, 404)
    assert "GET /api/bk-job/prod/api/v3/get_job_instance_status: HTTP 404" in err.message
    assert "check the server URL" in err.message
    assert "404 Not Found" in err.message


def test_401_empty_body_hints_at_credentials() -> None:
    err = error_from(lambda r: httpx.Response(401), lambda c: c.whoami())
    assert err.code == -1
    assert "authentication rejected" in err.message


def test_non_json_200_is_code_minus_one() -> None:
    err = error_from(
        lambda r: httpx.Response(200, text="hello"), lambda c: c.get_job_instance_status(1)
    )
    assert err.code == -1
    assert "not a bk-job envelope (hello)" in err.message


def test_connection_failure_is_an_api_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    err = error_from(refuse, lambda c: c.get_job_instance_status(1))
    assert err.code == -1
    assert err.http_status is None
    assert "cannot connect to http://jf.test:8080" in err.message
    assert isinstance(err.__cause__, httpx.ConnectError)


def test_timeout_is_an_api_error() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    err = error_from(slow, lambda c: c.call("get_job_instance_status", {"job_instance_id": 1}))
    assert "timed out" in err.message


def test_data_of_wrong_shape_is_refused() -> None:
    err = error_from(lambda r: ok([1, 2]), lambda c: c.get_job_instance_status(1))
    assert "expected an object" in err.message


def test_credentials_repr_hides_the_secret() -> None:
    creds = Credentials("app", "very-secret", "bob")
    assert "very-secret" not in repr(creds)
    assert json.loads(creds.header_value())["bk_app_secret"] == "very-secret"


@pytest.mark.parametrize(
    "url", ["http://[::1", "127.0.0.1:8080", "ftp://127.0.0.1", "http://", "http://127.0.0.1:99999"]
)
def test_a_server_url_that_cannot_be_one_is_a_value_error(url: str) -> None:
    # not httpx.InvalidURL, and not only at the first call
    with pytest.raises(ValueError, match="server URL"):
        JobClient(url, "app", "secret", "admin")


def test_a_certificate_that_does_not_verify_says_how_to_trust_a_private_ca() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local "
            "issuer certificate (_ssl.c:1006)",
            request=request,
        )

    client = JobClient(
        "https://jobfleet.test", "app", "secret", "admin", transport=httpx.MockTransport(handle)
    )
    with client, pytest.raises(JobApiError) as caught:
        client.whoami()
    assert caught.value.message.startswith("cannot connect to https://jobfleet.test: [SSL:")
    assert "SSL_CERT_FILE" in caught.value.message


def _bad_gzip(request: httpx.Request) -> httpx.Response:
    headers = {"content-encoding": "gzip", "content-type": "application/json"}
    return httpx.Response(200, headers=headers, content=b"not gzip at all")


def test_a_body_that_cannot_be_decoded_is_an_api_error() -> None:
    # httpx.DecodingError is no TransportError: it escaped the SDK
    transport = httpx.MockTransport(_bad_gzip)
    with JobClient("http://jobfleet.test", "a", "s", "u", transport=transport) as client:
        with pytest.raises(JobApiError, match="DecodingError"):
            client.whoami()
        with pytest.raises(JobApiError, match="DecodingError"):
            next(iter(client.events(7, retry_delay=0)))


async def test_async_a_body_that_cannot_be_decoded_is_an_api_error() -> None:
    transport = httpx.MockTransport(_bad_gzip)
    async with AsyncJobClient("http://jobfleet.test", "a", "s", "u", transport=transport) as client:
        with pytest.raises(JobApiError, match="DecodingError"):
            await client.whoami()


def test_a_token_is_sent_without_the_line_end_around_it() -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={"result": True, "code": 0, "data": {}})

    transport = httpx.MockTransport(handle)
    with JobClient.with_token("http://jobfleet.test", "jfp_abc\r\n", transport=transport) as c:
        c.whoami()
    assert seen == ["Bearer jfp_abc"]


@pytest.mark.parametrize("token", ["jfp_a\rb", "jfp_sécret", "jfp a"])
def test_a_token_no_token_can_be_is_refused_without_showing_it(token: str) -> None:
    with pytest.raises(ValueError) as caught:
        JobClient.with_token("http://jobfleet.test", token)
    assert "jfp" not in str(caught.value)
