"""execute_and_wait, wait_for_job, get_result and get_logs, sync and async."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from jobfleet.sdk import AsyncJobClient, JobApiError, JobClient, JobProgress, JobWaitTimeout

BK = "/api/bk-job/prod/api/v3/"


def ok(data: Any) -> httpx.Response:
    return httpx.Response(200, json={"result": True, "code": 0, "data": data})


def body_of(request: httpx.Request) -> dict[str, Any]:
    return json.loads(request.content) if request.content else {}


@dataclass
class FakeJobServer:
    """Just enough of the bk-job execution API to run one script job.

    The job reports running for ``polls_until_done`` status queries, then finished;
    hosts with an even id succeed, odd ones fail with exit code 1.
    """

    host_count: int = 3
    polls_until_done: int = 1
    requests: list[httpx.Request] = field(default_factory=list)
    submitted: dict[str, Any] = field(default_factory=dict)
    status_polls: int = 0
    log_batches: list[list[int]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        name = request.url.path.removeprefix(BK)
        if name == "fast_execute_script":
            self.submitted = body_of(request)
            return ok({"job_instance_id": 77, "job_instance_name": "t", "step_instance_id": 88})
        if name == "get_job_instance_status":
            self.status_polls += 1
            return ok(self.status())
        if name == "batch_get_job_instance_ip_log":
            ids = body_of(request)["host_id_list"]
            self.log_batches.append(ids)
            logs = [
                {
                    "host_id": i,
                    "bk_host_id": i,
                    "bk_cloud_id": 0,
                    "ip": self.ip(i),
                    "log_content": f"line 1\nhost {i}\n",
                }
                for i in ids
            ]
            return ok(
                {
                    "job_instance_id": 77,
                    "step_instance_id": 88,
                    "log_type": 1,
                    "script_task_logs": logs,
                }
            )
        return httpx.Response(404, text="no such route")

    @staticmethod
    def ip(host_id: int) -> str:
        return f"127.{host_id // 65536}.{host_id // 256 % 256}.{host_id % 256}"

    def status(self) -> dict[str, Any]:
        done = self.status_polls > self.polls_until_done
        hosts = []
        for i in range(1, self.host_count + 1):
            if done:
                status, code = (9, 0) if i % 2 == 0 else (104, 1)
            else:
                status, code = (7, None) if i == 1 else (9, 0) if i % 2 == 0 else (5, None)
            hosts.append(
                {
                    "bk_host_id": i,
                    "ip": self.ip(i),
                    "bk_cloud_id": 0,
                    "status": status,
                    "exit_code": code,
                    "tag": "",
                    "error_code": 0,
                }
            )
        job_status = (4 if self.host_count > 1 else 3) if done else 2
        return {
            "finished": done,
            "job_instance": {
                "job_instance_id": 77,
                "name": "t",
                "status": job_status,
                "bk_scope_type": "biz",
                "bk_scope_id": "2",
                "bk_biz_id": 2,
            },
            "step_instance_list": [
                {
                    "step_instance_id": 88,
                    "name": "t",
                    "type": 1,
                    "status": job_status,
                    "step_ip_result_list": hosts,
                }
            ],
        }

    def script(self) -> str:
        return base64.b64decode(self.submitted["script_content"]).decode()


@pytest.fixture
def fake() -> FakeJobServer:
    return FakeJobServer()


def sync_client(fake: FakeJobServer) -> JobClient:
    return JobClient(
        "http://jf.test",
        "app",
        "secret",
        "admin",
        biz=2,
        transport=httpx.MockTransport(fake.handle),
    )


def async_client(fake: FakeJobServer) -> AsyncJobClient:
    return AsyncJobClient(
        "http://jf.test",
        "app",
        "secret",
        "admin",
        biz=2,
        transport=httpx.MockTransport(fake.handle),
    )


def names(fake: FakeJobServer) -> list[str]:
    return [r.url.path.rsplit("/", 1)[1] for r in fake.requests]


def test_execute_and_wait_submits_polls_and_collects_logs(fake: FakeJobServer) -> None:
    progress: list[JobProgress] = []
    with sync_client(fake) as client:
        result = client.execute_and_wait(
            "echo héllo\n",
            hosts=["127.0.0.1", "3:127.0.0.2"],
            host_ids=[42],
            params="-v 'a b'",
            account="deploy",
            timeout=60,
            task_name="greet",
            poll_interval=0,
            on_progress=progress.append,
        )

    assert fake.script() == "echo héllo\n"
    assert base64.b64decode(fake.submitted["script_param"]).decode() == "-v 'a b'"
    assert fake.submitted == fake.submitted | {
        "script_language": 1,
        "account_alias": "deploy",
        "timeout": 60,
        "task_name": "greet",
        "bk_scope_type": "biz",
        "bk_scope_id": "2",
        "target_server": {
            "host_id_list": [42],
            "ip_list": [
                {"bk_cloud_id": 0, "ip": "127.0.0.1"},
                {"bk_cloud_id": 3, "ip": "127.0.0.2"},
            ],
        },
    }
    assert names(fake) == [
        "fast_execute_script",
        "get_job_instance_status",
        "get_job_instance_status",
        "batch_get_job_instance_ip_log",
    ]
    status_query = fake.requests[1].url.params
    assert (status_query["job_instance_id"], status_query["return_ip_result"]) == ("77", "true")

    # first poll: host 1 running, host 2 done, host 3 waiting; then all done
    assert [(p.total, p.done, p.failed, p.running, p.finished) for p in progress] == [
        (3, 1, 0, 1, False),
        (3, 3, 2, 0, True),
    ]
    assert progress[0].waiting == 1

    assert (result.job_instance_id, result.step_instance_id, result.status) == (77, 88, 4)
    assert result.finished and not result.ok
    assert [(h.bk_host_id, h.status, h.exit_code) for h in result.hosts] == [
        (1, 104, 1),
        (2, 9, 0),
        (3, 104, 1),
    ]
    assert result.hosts[1].log == "line 1\nhost 2\n"
    assert [h.bk_host_id for h in result.failed_hosts] == [1, 3]
    assert result.hosts[0].status_name == "Script exit code non-zero"
    assert json.loads(json.dumps(result.to_dict()))["ok"] is False


def test_no_params_means_no_script_param(fake: FakeJobServer) -> None:
    fake.host_count = 1
    with sync_client(fake) as client:
        result = client.execute_and_wait("true", hosts=["127.0.0.1"], poll_interval=0)
    assert "script_param" not in fake.submitted
    assert result.ok
    assert fake.submitted["account_alias"] == "root"
    assert fake.submitted["timeout"] == 7200


def test_biz_argument_overrides_the_client_default_on_every_call(fake: FakeJobServer) -> None:
    with sync_client(fake) as client:
        client.execute_and_wait("true", hosts=["127.0.0.1"], biz=9, poll_interval=0)
    assert fake.submitted["bk_scope_id"] == "9"
    for request in fake.requests[1:]:
        scope = request.url.params.get("bk_scope_id") or json.loads(request.content)["bk_scope_id"]
        assert scope == "9"


def test_logs_are_fetched_in_chunks_of_500(fake: FakeJobServer) -> None:
    fake.host_count = 1201
    fake.polls_until_done = 0
    with sync_client(fake) as client:
        result = client.execute_and_wait("true", hosts=["127.0.0.1"], poll_interval=0)
    assert [len(b) for b in fake.log_batches] == [500, 500, 201]
    assert [i for batch in fake.log_batches for i in batch] == list(range(1, 1202))
    assert all(h.log.endswith(f"host {h.bk_host_id}\n") for h in result.hosts)


def test_no_target_is_refused_before_any_request(fake: FakeJobServer) -> None:
    with sync_client(fake) as client, pytest.raises(ValueError, match="no target"):
        client.execute_and_wait("true")
    assert fake.requests == []


def test_wait_timeout_raises_with_the_job_id(fake: FakeJobServer) -> None:
    fake.polls_until_done = 10**6
    with sync_client(fake) as client, pytest.raises(JobWaitTimeout) as info:
        client.wait_for_job(77, poll_interval=0.01, wait_timeout=0.5)
    assert info.value.job_instance_id == 77
    assert fake.status_polls >= 2


def test_get_result_filters_hosts_by_ip_and_fetches_only_their_logs(fake: FakeJobServer) -> None:
    fake.polls_until_done = 0
    with sync_client(fake) as client:
        result = client.get_result(77, ips=["127.0.0.2"])
    assert [h.ip for h in result.hosts] == ["127.0.0.2"]
    assert fake.log_batches == [[2]]
    assert result.hosts[0].log == "line 1\nhost 2\n"


def test_get_logs_with_step_and_hosts_makes_one_request(fake: FakeJobServer) -> None:
    with sync_client(fake) as client:
        logs = client.get_logs(77, 88, [1, 3])
    assert names(fake) == ["batch_get_job_instance_ip_log"]
    assert logs == {1: "line 1\nhost 1\n", 3: "line 1\nhost 3\n"}


def test_get_logs_defaults_to_the_latest_started_step() -> None:
    status = {
        "finished": True,
        "job_instance": {"job_instance_id": 5, "status": 4},
        "step_instance_list": [
            {
                "step_instance_id": 1,
                "status": 3,
                "step_ip_result_list": [
                    {"bk_host_id": 7, "ip": "127.0.0.7", "status": 9, "exit_code": 0}
                ],
            },
            {
                "step_instance_id": 2,
                "status": 4,
                "step_ip_result_list": [
                    {"bk_host_id": 8, "ip": "127.0.0.8", "status": 104, "exit_code": 2}
                ],
            },
            {"step_instance_id": 3, "status": 1, "step_ip_result_list": []},
        ],
    }
    asked: list[dict[str, object]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("get_job_instance_status"):
            return httpx.Response(200, json={"result": True, "code": 0, "data": status})
        asked.append(json.loads(request.content))
        logs = {
            "file_task_logs": [
                {
                    "bk_host_id": 8,
                    "file_logs": [{"log_content": "download a"}, {"log_content": "download b\n"}],
                }
            ]
        }
        return httpx.Response(200, json={"result": True, "code": 0, "data": logs})

    with JobClient("http://jf.test", "a", "s", "u", transport=httpx.MockTransport(handle)) as c:
        assert c.get_logs(5) == {8: "download a\ndownload b\n"}
    assert asked == [{"job_instance_id": 5, "step_instance_id": 2, "host_id_list": [8]}]


async def test_async_execute_and_wait_matches_sync(fake: FakeJobServer) -> None:
    progress: list[JobProgress] = []
    async with async_client(fake) as client:
        result = await client.execute_and_wait(
            "uptime", host_ids=[1, 2, 3], poll_interval=0, on_progress=progress.append
        )
    assert names(fake) == [
        "fast_execute_script",
        "get_job_instance_status",
        "get_job_instance_status",
        "batch_get_job_instance_ip_log",
    ]
    assert fake.submitted["target_server"] == {"host_id_list": [1, 2, 3]}
    assert [p.done for p in progress] == [1, 3]
    assert result.status == 4
    assert result.hosts[0].log == "line 1\nhost 1\n"


async def test_async_get_logs_and_timeout(fake: FakeJobServer) -> None:
    fake.host_count = 1001
    async with async_client(fake) as client:
        logs = await client.get_logs(77, 88, list(range(1, 1002)))
        assert len(logs) == 1001
        assert [len(b) for b in fake.log_batches] == [500, 500, 1]
        fake.polls_until_done = 10**6
        with pytest.raises(JobWaitTimeout):
            await client.wait_for_job(77, poll_interval=0.01, wait_timeout=0.03)


async def test_async_admin_and_raw_calls(fake: FakeJobServer) -> None:
    async with async_client(fake) as client:
        data = await client.get_job_instance_status(77)
        assert data["job_instance"]["job_instance_id"] == 77
        raw = await client.call("get_job_instance_status", {"job_instance_id": 77})
        assert raw["finished"] is True
        assert fake.status_polls == 2
        await client.close()


def test_wait_rides_out_a_few_failed_polls(
    fake: FakeJobServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr("jobfleet.sdk._client.time.sleep", slept.append)
    outages = iter([httpx.ConnectError("refused"), httpx.Response(502, text="bad gateway")])

    def flaky(request: httpx.Request) -> httpx.Response:
        failure = next(outages, None)
        if isinstance(failure, Exception):
            raise failure
        return failure or fake.handle(request)

    with JobClient("http://jf.test", "a", "s", "u", transport=httpx.MockTransport(flaky)) as client:
        status = client.wait_for_job(77, poll_interval=0.25)
    assert status["finished"] is True
    assert slept == [1.0, 2.0, 0.25]


def test_wait_gives_up_on_business_errors_and_long_outages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("jobfleet.sdk._client.time.sleep", lambda s: None)
    calls: list[int] = []

    def missing(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, json={"result": False, "code": 1244006, "message": "gone"})

    client = JobClient("http://jf.test", "a", "s", "u", transport=httpx.MockTransport(missing))
    with client, pytest.raises(JobApiError) as info:
        client.wait_for_job(1)
    assert (info.value.code, len(calls)) == (1244006, 1)

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused")

    calls.clear()
    client = JobClient("http://jf.test", "a", "s", "u", transport=httpx.MockTransport(down))
    with client, pytest.raises(JobApiError, match="cannot connect"):
        client.wait_for_job(1)
    assert len(calls) == 6


@pytest.mark.parametrize(
    ("failure", "maybe_started"),
    [
        (httpx.ReadTimeout("read timed out"), True),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), True),
        (httpx.ConnectError("[Errno 111] Connection refused"), False),
    ],
)
def test_a_launch_without_an_answer_is_sent_once_and_says_it_may_have_started(
    failure: httpx.RequestError, maybe_started: bool
) -> None:
    sent: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        failure.request = request
        raise failure

    client = JobClient("http://jobfleet.test", "a", "s", "u", transport=httpx.MockTransport(handle))
    with client, pytest.raises(JobApiError) as caught:
        client.execute_and_wait("uptime", hosts=["127.0.0.1"], poll_interval=0)
    # never sent again: a second launch would run the script twice
    assert [r.url.path for r in sent] == [BK + "fast_execute_script"]
    assert ("may have started" in caught.value.message) is maybe_started


def test_a_job_without_steps_is_said_plainly() -> None:
    from jobfleet.sdk._flow import require_step

    with pytest.raises(JobApiError) as caught:
        require_step({"job_instance": {}, "step_instance_list": []}, 7, None)
    assert caught.value.code == -1
    assert caught.value.message == "job 7 has no steps"
    with pytest.raises(JobApiError) as caught:
        require_step({"job_instance": {}, "step_instance_list": []}, 7, 3)
    assert caught.value.message == "job 7 has no step 3"
