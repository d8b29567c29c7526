"""The blocking client."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from jobfleet.sdk import _flow
from jobfleet.sdk._api import AdminApi, BkApi, biz_scope, expect_dict, expect_list, with_scope
from jobfleet.sdk._errors import JobApiError, JobWaitTimeout
from jobfleet.sdk._models import (
    Credentials,
    ExecutionResult,
    FileLog,
    JobProgress,
    TransferProgress,
    TransferResult,
)
from jobfleet.sdk._notify import NotifyApi
from jobfleet.sdk._templates import TemplateApi, parse_text, text_request
from jobfleet.sdk._topology import TopologyApi
from jobfleet.sdk._transport import (
    DOWNLOAD_HEADERS,
    FILES_PATH,
    Method,
    RequestSpec,
    admin_request,
    bk_request,
    default_headers,
    download_path,
    is_file_response,
    not_a_file,
    parse_envelope,
    transport_error,
    upload_headers,
)

# called with the status of each poll and the seconds waited so far
Observer = Callable[[dict[str, Any], float], None]


class JobClient(
    BkApi[dict[str, Any]],
    AdminApi[dict[str, Any], list[dict[str, Any]]],
    TemplateApi[dict[str, Any], str],
    NotifyApi[dict[str, Any], list[dict[str, Any]]],
    TopologyApi[dict[str, Any], list[dict[str, Any]]],
):
    """A bk-job v3 client for jobfleet (or any bk-job API gateway).

    >>> with JobClient("http://127.0.0.1:8080", "my-app", "secret", "admin", biz=2) as c:
    ...     result = c.execute_and_wait("uptime", hosts=["10.0.0.1"])
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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = Credentials(app_code, app_secret, username)
        self.biz = biz
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=default_headers(self.credentials),
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    def __enter__(self) -> JobClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- raw calls --------------------------------------------------------------

    def call(
        self, name: str, params: Mapping[str, Any] | None = None, *, method: Method | None = None
    ) -> Any:
        """Call bk-job API ``name`` and return its ``data``; scope is filled from ``biz``."""
        scoped = with_scope(dict(params or {}), self.biz)
        return self._send(bk_request(name, scoped, method))

    def admin_call(
        self,
        method: Method,
        path: str,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call jobfleet's own API at ``/api/jobfleet/v1{path}`` and return its ``data``."""
        return self._send(admin_request(method, path, json, params))

    def _send(self, spec: RequestSpec) -> Any:
        request = self._http.build_request(
            spec.method, spec.path, params=spec.query, json=spec.body
        )
        try:
            response = self._http.send(request)
        except httpx.TransportError as exc:
            raise transport_error(exc, request) from exc
        return parse_envelope(response)

    def _bk(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        return expect_dict(self.call(name, params), name)

    def _admin_dict(
        self,
        method: Method,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return expect_dict(self.admin_call(method, path, body, params), path)

    def _admin_list(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return expect_list(self.admin_call("GET", path, None, params), path)

    def _admin_text(self, path: str, params: dict[str, Any]) -> str:
        return parse_text(self._send_built(text_request(self._http, "GET", path, params)))

    def _admin_send_text(self, path: str, text: str, params: dict[str, Any]) -> dict[str, Any]:
        response = self._send_built(text_request(self._http, "POST", path, params, text))
        return expect_dict(parse_envelope(response), path)

    def _send_built(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._http.send(request)
        except httpx.TransportError as exc:
            raise transport_error(exc, request) from exc

    # --- helpers ----------------------------------------------------------------

    def execute_and_wait(
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
        submitted = self.fast_execute_script(**request, **biz_scope(biz))
        job_id, step_id = _flow.submitted_ids(submitted)
        status = self.wait_for_job(
            job_id,
            step_instance_id=step_id,
            biz=biz,
            poll_interval=poll_interval,
            wait_timeout=wait_timeout,
            on_progress=on_progress,
        )
        return self._result(job_id, step_id, status, biz=biz)

    def wait_for_job(
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

        def observe(status: dict[str, Any], elapsed: float) -> None:
            if on_progress is not None:
                on_progress(_flow.progress_of(job_instance_id, status, step_instance_id, elapsed))

        return self._wait(job_instance_id, biz, poll_interval, wait_timeout, observe)

    def _wait(
        self,
        job_instance_id: int,
        biz: int | str | None,
        poll_interval: float,
        wait_timeout: float | None,
        observe: Observer,
    ) -> dict[str, Any]:
        started = time.monotonic()
        failures = 0
        while True:
            try:
                status = self.get_job_instance_status(
                    job_instance_id, return_ip_result=True, **biz_scope(biz)
                )
                elapsed = time.monotonic() - started
                # inside the retry: an observer may call the server too
                observe(status, elapsed)
            except JobApiError as exc:
                failures += 1
                delay = _flow.retry_delay(exc, failures, poll_interval)
                if delay is None:
                    raise
                time.sleep(delay)
                continue
            failures = 0
            if _flow.is_finished(status):
                return status
            if wait_timeout is not None and elapsed >= wait_timeout:
                raise JobWaitTimeout(job_instance_id, elapsed)
            time.sleep(poll_interval)

    def get_result(
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
        status = self.get_job_instance_status(
            job_instance_id, return_ip_result=True, **biz_scope(biz)
        )
        return self._result(
            job_instance_id,
            step_instance_id,
            status,
            ips=ips,
            host_ids=host_ids,
            biz=biz,
            logs=logs,
        )

    def get_logs(
        self,
        job_instance_id: int,
        step_instance_id: int | None = None,
        host_ids: Sequence[int] | None = None,
        *,
        biz: int | str | None = None,
    ) -> dict[int, str]:
        """Host id → log of one step (default: the latest started), for all or some hosts."""
        if step_instance_id is None or host_ids is None:
            result = self.get_result(
                job_instance_id, step_instance_id, host_ids=host_ids, biz=biz, logs=False
            )
            step_instance_id = result.step_instance_id
            host_ids = _flow.log_host_ids(result.hosts)
        return self._fetch_logs(job_instance_id, step_instance_id, host_ids, biz).text

    def _result(
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
            found = self._fetch_logs(
                job_instance_id, int(step["step_instance_id"]), _flow.log_host_ids(hosts), biz
            )
            _flow.with_logs(hosts, found)
        return _flow.execution_result(job_instance_id, status, step, hosts)

    def _fetch_logs(
        self,
        job_instance_id: int,
        step_instance_id: int,
        host_ids: Sequence[int],
        biz: int | str | None,
    ) -> _flow.StepLogs:
        logs = _flow.StepLogs()
        for chunk in _flow.chunks(host_ids):
            logs.add(
                self.batch_get_job_instance_ip_log(
                    job_instance_id, step_instance_id, host_id_list=chunk, **biz_scope(biz)
                )
            )
        return logs

    # --- files ------------------------------------------------------------------

    def upload_file(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        biz: int | str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Send a local file to the server, streamed from disk.

        Returns ``{file_id, name, size, sha256, path}``; ``path`` is what a
        ``fast_transfer_file`` source with ``file_type: 2`` takes. ``on_progress`` is
        called with the bytes sent so far.
        """
        return self._upload(_flow.local_file(path, name), biz, on_progress)

    def _upload(
        self,
        item: _flow.LocalFile,
        biz: int | str | None,
        on_progress: Callable[[int], None] | None,
    ) -> dict[str, Any]:
        digest = hashlib.sha256()
        sent = 0

        def body() -> Generator[bytes, None, None]:
            nonlocal sent
            with item.path.open("rb") as fh:
                # never more than announced: a growing file must not break the request
                while sent < item.size:
                    chunk = fh.read(min(_flow.CHUNK_SIZE, item.size - sent))
                    if not chunk:
                        raise _flow.shrunk(item)
                    digest.update(chunk)
                    sent += len(chunk)
                    if on_progress is not None:
                        on_progress(sent)
                    yield chunk

        stream = body()
        request = self._http.build_request(
            "POST",
            FILES_PATH,
            params=_flow.upload_query(item.name, self.biz if biz is None else biz),
            headers=upload_headers(item.size),
            content=stream,
        )
        try:
            response = self._http.send(request)
        except httpx.TransportError as exc:
            raise transport_error(exc, request) from exc
        finally:
            # a server that refuses early (413) leaves the body unread: close the file now
            stream.close()
        answer = expect_dict(parse_envelope(response), FILES_PATH)
        return _flow.checked_upload(answer, item, sent, digest.hexdigest())

    def download_file(
        self,
        file_id: str,
        dest_path: str | os.PathLike[str],
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Save a file the server holds (fetched from a host, or uploaded) at ``dest_path``.

        The bytes go to a temporary file beside it that is renamed once complete and,
        when the server sends its sha256, verified; ``dest_path`` is never left half
        written. ``on_progress`` is called with the bytes received so far.
        """
        dest = Path(dest_path)
        request = self._http.build_request("GET", download_path(file_id), headers=DOWNLOAD_HEADERS)
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise transport_error(exc, request) from exc
        try:
            if not is_file_response(response):
                response.read()
                raise not_a_file(response)
            expected = response.headers.get(_flow.SHA256_HEADER)
            temp = _flow.temp_path(dest)
            try:
                digest = hashlib.sha256()
                received = 0
                with temp.open("xb") as fh:
                    for chunk in response.iter_bytes(_flow.CHUNK_SIZE):
                        fh.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        if on_progress is not None:
                            on_progress(received)
                    fh.flush()
                    os.fsync(fh.fileno())
                _flow.check_download(file_id, expected, digest.hexdigest())
                temp.replace(dest)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
        except httpx.TransportError as exc:
            raise transport_error(exc, request) from exc
        finally:
            response.close()

    def transfer_and_wait(
        self,
        files: Sequence[str | os.PathLike[str]] | None = None,
        *,
        remote_files: Sequence[tuple[Sequence[str], Sequence[str]]] | None = None,
        hosts: Sequence[str] | None = None,
        host_ids: Sequence[int] | None = None,
        bk_cloud_id: int = 0,
        target_path: str,
        account: str = "root",
        transfer_mode: int = 2,
        upload_speed_limit: int | None = None,
        download_speed_limit: int | None = None,
        timeout: int = 7200,
        biz: int | str | None = None,
        task_name: str | None = None,
        poll_interval: float = 0.5,
        wait_timeout: float | None = None,
        on_progress: Callable[[TransferProgress], None] | None = None,
        on_upload: Callable[[int, int], None] | None = None,
    ) -> TransferResult:
        """Copy files to ``target_path`` on hosts, wait for the end, and return each
        target's result and file logs.

        ``files`` are local paths, uploaded to the server first (``on_upload`` gets the
        bytes sent and the total); ``remote_files`` are ``(paths, source host IPs)``
        pairs copied from those hosts. ``transfer_mode`` 1 (strict) fails a target whose
        directory is missing, 2 (force) creates it; speed limits are MB/s.
        ``on_progress`` gets the targets' host counts and bytes written after each poll.
        """
        local = _flow.local_files(files or [])
        request = _flow.transfer_request(
            local=bool(local),
            remote_files=remote_files,
            hosts=hosts,
            host_ids=host_ids,
            bk_cloud_id=bk_cloud_id,
            target_path=target_path,
            account=account,
            transfer_mode=transfer_mode,
            upload_speed_limit=upload_speed_limit,
            download_speed_limit=download_speed_limit,
            timeout=timeout,
            task_name=task_name,
        )
        uploads = self._upload_all(local, biz, on_upload)
        submitted = self.fast_transfer_file(
            **_flow.with_uploads(request, uploads), **biz_scope(biz)
        )
        job_id, step_id = _flow.submitted_ids(submitted)
        tally = _flow.ByteTally()

        def observe(status: dict[str, Any], elapsed: float) -> None:
            if on_progress is None:
                return
            targets = _flow.host_results(_flow.pick_step(status, step_id))
            pending = tally.pending(targets)
            if pending:
                tally.record(targets, self._fetch_logs(job_id, step_id, pending, biz))
            on_progress(tally.progress(_flow.progress_of(job_id, status, step_id, elapsed)))

        status = self._wait(job_id, biz, poll_interval, wait_timeout, observe)
        result = self._result(job_id, step_id, status, biz=biz)
        sources = self._source_logs(job_id, step_id, remote_files, bk_cloud_id, biz)
        return _flow.transfer_result(result, uploads, sources)

    def _upload_all(
        self,
        local: list[_flow.LocalFile],
        biz: int | str | None,
        on_upload: Callable[[int, int], None] | None,
    ) -> list[dict[str, Any]]:
        total = sum(item.size for item in local)
        done = 0
        uploads = []
        for item in local:

            def report(sent: int, before: int = done) -> None:
                if on_upload is not None:
                    on_upload(before + sent, total)

            uploads.append(self._upload(item, biz, report))
            done += item.size
        return uploads

    def _source_logs(
        self,
        job_instance_id: int,
        step_instance_id: int,
        remote_files: Sequence[tuple[Sequence[str], Sequence[str]]] | None,
        bk_cloud_id: int,
        biz: int | str | None,
    ) -> list[FileLog]:
        logs = _flow.StepLogs()
        for chunk in _flow.chunks(_flow.source_ips(remote_files, bk_cloud_id)):
            logs.add(
                self.batch_get_job_instance_ip_log(
                    job_instance_id, step_instance_id, ip_list=chunk, **biz_scope(biz)
                )
            )
        return _flow.upload_logs(logs)
