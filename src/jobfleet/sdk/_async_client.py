"""The asyncio client: the same surface as ``JobClient``, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from jobfleet.sdk import _flow
from jobfleet.sdk._api import AdminApi, BkApi, biz_scope, expect_dict, expect_list, with_scope
from jobfleet.sdk._errors import JobApiError, JobWaitTimeout
from jobfleet.sdk._models import Credentials, ExecutionResult, JobProgress
from jobfleet.sdk._transport import (
    Method,
    RequestSpec,
    admin_request,
    bk_request,
    default_headers,
    parse_envelope,
    transport_error,
)


class AsyncJobClient(
    BkApi[Awaitable[dict[str, Any]]],
    AdminApi[Awaitable[dict[str, Any]], Awaitable[list[dict[str, Any]]]],
):
    """A bk-job v3 client for jobfleet on asyncio; see ``JobClient``.

    >>> async with AsyncJobClient("http://127.0.0.1:8080", "app", "secret", "admin") as c:
    ...     result = await c.execute_and_wait("uptime", hosts=["10.0.0.1"])
    """

    def __init__(
        self,
        base_url: str,
        app_code: str,
        app_secret: str,
        username: str,
        *,
        biz: int | str | None = None,
        timeout: float = 30.0,
        verify: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = Credentials(app_code, app_secret, username)
        self.biz = biz
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=default_headers(self.credentials),
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncJobClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def close(self) -> None:
        await self.aclose()

    # --- raw calls --------------------------------------------------------------

    async def call(
        self, name: str, params: Mapping[str, Any] | None = None, *, method: Method | None = None
    ) -> Any:
        """Call bk-job API ``name`` and return its ``data``; scope is filled from ``biz``."""
        scoped = with_scope(dict(params or {}), self.biz)
        return await self._send(bk_request(name, scoped, method))

    async def admin_call(
        self,
        method: Method,
        path: str,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call jobfleet's own API at ``/api/jobfleet/v1{path}`` and return its ``data``."""
        return await self._send(admin_request(method, path, json, params))

    async def _send(self, spec: RequestSpec) -> Any:
        request = self._http.build_request(
            spec.method, spec.path, params=spec.query, json=spec.body
        )
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise transport_error(exc, request) from exc
        return parse_envelope(response)

    def _bk(self, name: str, params: dict[str, Any]) -> Awaitable[dict[str, Any]]:
        return self._bk_async(name, params)

    async def _bk_async(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        return expect_dict(await self.call(name, params), name)

    def _admin_dict(
        self,
        method: Method,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Awaitable[dict[str, Any]]:
        return self._admin_dict_async(method, path, body, params)

    async def _admin_dict_async(
        self,
        method: Method,
        path: str,
        body: dict[str, Any] | None,
        params: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return expect_dict(await self.admin_call(method, path, body, params), path)

    def _admin_list(
        self, path: str, params: dict[str, Any] | None = None
    ) -> Awaitable[list[dict[str, Any]]]:
        return self._admin_list_async(path, params)

    async def _admin_list_async(
        self, path: str, params: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        return expect_list(await self.admin_call("GET", path, None, params), path)

    # --- helpers ----------------------------------------------------------------

    async def execute_and_wait(
        self,
        script: str,
        *,
        hosts: list[str] | None = None,
        host_ids: list[int] | None = None,
        bk_cloud_id: int = 0,
        language: int = 1,
        params: str = "",
        account: str = "root",
        timeout: int = 7200,
        biz: int | str | None = None,
        task_name: str | None = None,
        poll_interval: float = 0.5,
        wait_timeout: float | None = None,
        on_progress: Callable[[JobProgress], None] | None = None,
    ) -> ExecutionResult:
        """Run ``script`` on hosts, wait for the end, and return every host's result and log.

        ``hosts`` are IPs (``"ip"`` or ``"cloud:ip"``) in cloud area ``bk_cloud_id``;
        ``host_ids`` are bk host ids. Raises ``JobWaitTimeout`` after ``wait_timeout``
        seconds (the job itself keeps running).
        """
        request = _flow.script_request(
            script,
            hosts=hosts,
            host_ids=host_ids,
            bk_cloud_id=bk_cloud_id,
            language=language,
            params=params,
            account=account,
            timeout=timeout,
            task_name=task_name,
        )
        submitted = await self.fast_execute_script(**request, **biz_scope(biz))
        job_id, step_id = _flow.submitted_ids(submitted)
        status = await self.wait_for_job(
            job_id,
            step_instance_id=step_id,
            biz=biz,
            poll_interval=poll_interval,
            wait_timeout=wait_timeout,
            on_progress=on_progress,
        )
        return await self._result(job_id, step_id, status, biz=biz)

    async def wait_for_job(
        self,
        job_instance_id: int,
        *,
        step_instance_id: int | None = None,
        biz: int | str | None = None,
        poll_interval: float = 0.5,
        wait_timeout: float | None = None,
        on_progress: Callable[[JobProgress], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job is finished; return the last ``get_job_instance_status`` data.

        Progress counts the hosts of ``step_instance_id`` (default: the latest started step).
        A few failed polls in a row without a server answer are retried, so a server
        restart does not end the wait.
        """
        started = time.monotonic()
        failures = 0
        while True:
            try:
                status = await self.get_job_instance_status(
                    job_instance_id, return_ip_result=True, **biz_scope(biz)
                )
            except JobApiError as exc:
                failures += 1
                delay = _flow.retry_delay(exc, failures, poll_interval)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            failures = 0
            elapsed = time.monotonic() - started
            if on_progress is not None:
                on_progress(_flow.progress_of(job_instance_id, status, step_instance_id, elapsed))
            if _flow.is_finished(status):
                return status
            if wait_timeout is not None and elapsed >= wait_timeout:
                raise JobWaitTimeout(job_instance_id, elapsed)
            await asyncio.sleep(poll_interval)

    async def get_result(
        self,
        job_instance_id: int,
        step_instance_id: int | None = None,
        *,
        ips: Sequence[str] | None = None,
        host_ids: Sequence[int] | None = None,
        biz: int | str | None = None,
        logs: bool = True,
    ) -> ExecutionResult:
        """A job's current state and its hosts' results (and logs) for one step.

        Without ``step_instance_id`` the latest started step is used; ``ips`` /
        ``host_ids`` keep only those hosts.
        """
        status = await self.get_job_instance_status(
            job_instance_id, return_ip_result=True, **biz_scope(biz)
        )
        return await self._result(
            job_instance_id,
            step_instance_id,
            status,
            ips=ips,
            host_ids=host_ids,
            biz=biz,
            logs=logs,
        )

    async def get_logs(
        self,
        job_instance_id: int,
        step_instance_id: int | None = None,
        host_ids: Sequence[int] | None = None,
        *,
        biz: int | str | None = None,
    ) -> dict[int, str]:
        """Host id → log of one step (default: the latest started), for all or some hosts."""
        if step_instance_id is None or host_ids is None:
            result = await self.get_result(
                job_instance_id, step_instance_id, host_ids=host_ids, biz=biz, logs=False
            )
            step_instance_id = result.step_instance_id
            host_ids = _flow.log_host_ids(result.hosts)
        return await self._fetch_logs(job_instance_id, step_instance_id, host_ids, biz)

    async def _result(
        self,
        job_instance_id: int,
        step_instance_id: int | None,
        status: dict[str, Any],
        *,
        ips: Sequence[str] | None = None,
        host_ids: Sequence[int] | None = None,
        biz: int | str | None = None,
        logs: bool = True,
    ) -> ExecutionResult:
        step = _flow.require_step(status, job_instance_id, step_instance_id)
        hosts = _flow.select_hosts(_flow.host_results(step), ips, host_ids)
        if logs:
            found = await self._fetch_logs(
                job_instance_id, int(step["step_instance_id"]), _flow.log_host_ids(hosts), biz
            )
            _flow.with_logs(hosts, found)
        return _flow.execution_result(job_instance_id, status, step, hosts)

    async def _fetch_logs(
        self,
        job_instance_id: int,
        step_instance_id: int,
        host_ids: Sequence[int],
        biz: int | str | None,
    ) -> dict[int, str]:
        logs: dict[int, str] = {}
        for chunk in _flow.chunks(host_ids):
            data = await self.batch_get_job_instance_ip_log(
                job_instance_id, step_instance_id, host_id_list=chunk, **biz_scope(biz)
            )
            logs.update(_flow.logs_by_host(data))
        return logs
