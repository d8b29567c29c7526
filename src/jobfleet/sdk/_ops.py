"""Every call and helper of the clients, written once as a flow of steps (``_steps``).

``JobClient`` walks these flows blocking, ``AsyncJobClient`` awaited; a public
method of either is the flow of the same name here, with the same parameters.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from jobfleet.sdk import _file_flow, _flow
from jobfleet.sdk._api import BkApi, biz_scope, expect_dict, expect_list, with_scope
from jobfleet.sdk._errors import JobApiError, JobWaitTimeout
from jobfleet.sdk._models import (
    ExecutionResult,
    FileLog,
    JobProgress,
    Target,
    TransferProgress,
    TransferResult,
)
from jobfleet.sdk._steps import (
    Blocking,
    Close,
    DownloadSink,
    Flow,
    Read,
    Receive,
    Send,
    Sleep,
    UploadBody,
)
from jobfleet.sdk._templates import parse_text, text_request
from jobfleet.sdk._transport import (
    DOWNLOAD_HEADERS,
    FILES_PATH,
    Method,
    RequestSpec,
    admin_request,
    bk_request,
    download_path,
    is_file_response,
    not_a_file,
    parse_envelope,
    transport_error,
    upload_headers,
)

# called with the status of each poll and the seconds waited so far
Observer = Callable[[dict[str, Any], float], Flow[None]]


class Flows(BkApi[Flow[dict[str, Any]]]):
    """The operations of one client; ``biz`` reads the client's default business."""

    def __init__(self, biz: Callable[[], int | str | None]) -> None:
        self._biz = biz

    # --- raw calls --------------------------------------------------------------

    def call(
        self, name: str, params: Mapping[str, Any] | None = None, *, method: Method | None = None
    ) -> Flow[Any]:
        """Call bk-job API ``name`` and return its ``data``; scope is filled from ``biz``."""
        scoped = with_scope(dict(params or {}), self._biz())
        return (yield from self._json(bk_request(name, scoped, method)))

    def admin_call(
        self,
        method: Method,
        path: str,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Flow[Any]:
        """Call jobfleet's own API at ``/api/jobfleet/v1{path}`` and return its ``data``."""
        return (yield from self._json(admin_request(method, path, json, params)))

    def _json(self, spec: RequestSpec) -> Flow[Any]:
        response = yield Send(spec.method, spec.path, params=spec.query, json=spec.body)
        return parse_envelope(response)

    def _bk(self, name: str, params: dict[str, Any]) -> Flow[dict[str, Any]]:
        return expect_dict((yield from self.call(name, params)), name)

    def admin_dict(
        self,
        method: Method,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Flow[dict[str, Any]]:
        return expect_dict((yield from self.admin_call(method, path, body, params)), path)

    def admin_list(
        self, path: str, params: dict[str, Any] | None = None
    ) -> Flow[list[dict[str, Any]]]:
        return expect_list((yield from self.admin_call("GET", path, None, params)), path)

    def admin_text(self, path: str, params: dict[str, Any]) -> Flow[str]:
        return parse_text((yield text_request("GET", path, params)))

    def admin_send_text(self, path: str, text: str, params: dict[str, Any]) -> Flow[dict[str, Any]]:
        response = yield text_request("POST", path, params, text)
        return expect_dict(parse_envelope(response), path)

    # --- helpers ----------------------------------------------------------------

    def execute_and_wait(
        self,
        script: str | bytes,
        *,
        hosts: list[str] | None = None,
        host_ids: list[int] | None = None,
        target: Target | None = None,
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
    ) -> Flow[ExecutionResult]:
        """Run ``script`` on hosts, wait for the end, and return every host's result and log.

        ``script`` may be bytes in any encoding (a GBK ``.bat``): the host runs exactly them.

        ``hosts`` are IPs (``"ip"`` or ``"cloud:ip"``) in cloud area ``bk_cloud_id``;
        ``host_ids`` are bk host ids; ``target`` adds dynamic groups and topology nodes
        (``Target``). Raises ``JobWaitTimeout`` after ``wait_timeout``
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
            target=target,
        )
        submitted = yield from self.fast_execute_script(**request, **biz_scope(biz))
        job_id, step_id = _flow.submitted_ids(submitted)
        status = yield from self.wait_for_job(
            job_id,
            step_instance_id=step_id,
            biz=biz,
            poll_interval=poll_interval,
            wait_timeout=wait_timeout,
            on_progress=on_progress,
        )
        return (yield from self._result(job_id, step_id, status, biz=biz))

    def wait_for_job(
        self,
        job_instance_id: int,
        *,
        step_instance_id: int | None = None,
        biz: int | str | None = None,
        poll_interval: float = 0.5,
        wait_timeout: float | None = None,
        on_progress: Callable[[JobProgress], None] | None = None,
    ) -> Flow[dict[str, Any]]:
        """Poll until the job is finished; return the last ``get_job_instance_status`` data.

        Progress counts the hosts of ``step_instance_id`` (default: the latest started step).
        A few failed polls in a row without a server answer, or answered "busy" or
        "throttled" (1240001, 1249429), are retried, so a server restart or a moment
        of load does not end the wait.
        """

        def observe(status: dict[str, Any], elapsed: float) -> Flow[None]:
            if on_progress is not None:
                on_progress(_flow.progress_of(job_instance_id, status, step_instance_id, elapsed))
            return
            yield  # a flow that needs no step

        return (yield from self._wait(job_instance_id, biz, poll_interval, wait_timeout, observe))

    def _wait(
        self,
        job_instance_id: int,
        biz: int | str | None,
        poll_interval: float,
        wait_timeout: float | None,
        observe: Observer,
    ) -> Flow[dict[str, Any]]:
        started = time.monotonic()
        failures = 0
        while True:
            try:
                status = yield from self.get_job_instance_status(
                    job_instance_id, return_ip_result=True, **biz_scope(biz)
                )
                elapsed = time.monotonic() - started
                # inside the retry: an observer may call the server too
                yield from observe(status, elapsed)
            except JobApiError as exc:
                failures += 1
                delay = _flow.retry_delay(exc, failures, poll_interval)
                if delay is None:
                    raise
                yield Sleep(delay)
                continue
            failures = 0
            if _flow.is_finished(status):
                return status
            if wait_timeout is not None and elapsed >= wait_timeout:
                raise JobWaitTimeout(job_instance_id, elapsed)
            yield Sleep(poll_interval)

    def get_result(
        self,
        job_instance_id: int,
        step_instance_id: int | None = None,
        *,
        ips: Sequence[str] | None = None,
        host_ids: Sequence[int] | None = None,
        biz: int | str | None = None,
        logs: bool = True,
    ) -> Flow[ExecutionResult]:
        """A job's current state and its hosts' results (and logs) for one step.

        Without ``step_instance_id`` the latest started step is used; ``ips`` /
        ``host_ids`` keep only those hosts.
        """
        status = yield from self.get_job_instance_status(
            job_instance_id, return_ip_result=True, **biz_scope(biz)
        )
        return (
            yield from self._result(
                job_instance_id,
                step_instance_id,
                status,
                ips=ips,
                host_ids=host_ids,
                biz=biz,
                logs=logs,
            )
        )

    def get_logs(
        self,
        job_instance_id: int,
        step_instance_id: int | None = None,
        host_ids: Sequence[int] | None = None,
        *,
        biz: int | str | None = None,
    ) -> Flow[dict[int, str]]:
        """Host id → log of one step (default: the latest started), for all or some hosts."""
        if step_instance_id is None or host_ids is None:
            result = yield from self.get_result(
                job_instance_id, step_instance_id, host_ids=host_ids, biz=biz, logs=False
            )
            step_instance_id = result.step_instance_id
            host_ids = _flow.log_host_ids(result.hosts)
        return (yield from self._fetch_logs(job_instance_id, step_instance_id, host_ids, biz)).text

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
    ) -> Flow[ExecutionResult]:
        step = _flow.require_step(status, job_instance_id, step_instance_id)
        hosts = _flow.select_hosts(_flow.host_results(step), ips, host_ids)
        if logs:
            found = yield from self._fetch_logs(
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
    ) -> Flow[_flow.StepLogs]:
        logs = _flow.StepLogs()
        for chunk in _flow.chunks(host_ids):
            logs.add(
                (
                    yield from self.batch_get_job_instance_ip_log(
                        job_instance_id, step_instance_id, host_id_list=chunk, **biz_scope(biz)
                    )
                )
            )
        return logs

    # --- files ------------------------------------------------------------------
    # Disk work is a Blocking step: the async client runs it in a worker thread.

    def upload_file(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        biz: int | str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> Flow[dict[str, Any]]:
        """Send a local file to the server, streamed from disk.

        Returns ``{file_id, name, size, sha256, path}``; ``path`` is what a
        ``fast_transfer_file`` source with ``file_type: 2`` takes. ``on_progress`` is
        called with the bytes sent so far.
        """
        item = yield Blocking(lambda: _file_flow.local_file(path, name))
        return (yield from self._upload(item, biz, on_progress))

    def _upload(
        self,
        item: _file_flow.LocalFile,
        biz: int | str | None,
        on_progress: Callable[[int], None] | None,
    ) -> Flow[dict[str, Any]]:
        body = UploadBody(item, on_progress)
        response = yield Send(
            "POST",
            FILES_PATH,
            params=_file_flow.upload_query(item.name, self._biz() if biz is None else biz),
            headers=upload_headers(item.size),
            upload=body,
        )
        answer = expect_dict(parse_envelope(response), FILES_PATH)
        return _file_flow.checked_upload(answer, item, body.sent, body.digest.hexdigest())

    def download_file(
        self,
        file_id: str,
        dest_path: str | os.PathLike[str],
        on_progress: Callable[[int], None] | None = None,
        max_bytes: int = _file_flow.MAX_DOWNLOAD_BYTES,
    ) -> Flow[None]:
        """Save a file the server holds (fetched from a host, or uploaded) at ``dest_path``.

        The bytes go to a temporary file beside it that is renamed once complete and,
        when the server sends its sha256, verified; ``dest_path`` is never left half
        written. ``on_progress`` is called with the bytes received so far. A file larger
        than ``max_bytes`` (16 GiB unless given) is refused, as soon as its length or
        its bytes say so, and nothing of it is left on disk.
        """
        response: httpx.Response = yield Send(
            "GET", download_path(file_id), headers=DOWNLOAD_HEADERS, stream=True
        )
        try:
            if not is_file_response(response):
                yield Read(response)
                raise not_a_file(response)
            length = response.headers.get("content-length", "")
            if length.isdecimal() and int(length) > max_bytes:
                raise _file_flow.too_large(file_id, max_bytes)
            sink = DownloadSink(file_id, Path(dest_path), on_progress, max_bytes)
            sink.expected = response.headers.get(_flow.SHA256_HEADER)
            try:
                yield Blocking(sink.open)
                yield Receive(response, sink)
                yield Blocking(sink.finish)
            except BaseException:
                yield Blocking(sink.discard)
                raise
        except httpx.RequestError as exc:
            raise transport_error(exc, response.request) from exc
        finally:
            yield Close(response)

    def transfer_and_wait(
        self,
        files: Sequence[str | os.PathLike[str]] | None = None,
        *,
        remote_files: Sequence[tuple[Sequence[str], Sequence[str]]] | None = None,
        hosts: Sequence[str] | None = None,
        host_ids: Sequence[int] | None = None,
        target: Target | None = None,
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
    ) -> Flow[TransferResult]:
        """Copy files to ``target_path`` on hosts, wait for the end, and return each
        target's result and file logs.

        ``files`` are local paths, uploaded to the server first (``on_upload`` gets the
        bytes sent and the total); ``remote_files`` are ``(paths, source host IPs)``
        pairs copied from those hosts. ``transfer_mode`` 1 (strict) fails a target whose
        directory is missing, 2 (force) creates it; speed limits are MB/s.
        ``on_progress`` gets the targets' host counts and bytes written after each poll.
        """
        local: list[_file_flow.LocalFile] = yield Blocking(
            lambda: _file_flow.local_files(list(files or []))
        )
        request = _file_flow.transfer_request(
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
            target=target,
        )
        uploads = yield from self._upload_all(local, biz, on_upload)
        submitted = yield from self.fast_transfer_file(
            **_file_flow.with_uploads(request, uploads), **biz_scope(biz)
        )
        job_id, step_id = _flow.submitted_ids(submitted)
        tally = _file_flow.ByteTally()

        def observe(status: dict[str, Any], elapsed: float) -> Flow[None]:
            if on_progress is None:
                return
            targets = _flow.host_results(_flow.pick_step(status, step_id))
            pending = tally.pending(targets)
            if pending:
                tally.record(targets, (yield from self._fetch_logs(job_id, step_id, pending, biz)))
            on_progress(tally.progress(_flow.progress_of(job_id, status, step_id, elapsed)))

        status = yield from self._wait(job_id, biz, poll_interval, wait_timeout, observe)
        result = yield from self._result(job_id, step_id, status, biz=biz)
        sources = yield from self._source_logs(job_id, step_id, remote_files, bk_cloud_id, biz)
        return _file_flow.transfer_result(result, uploads, sources)

    def _upload_all(
        self,
        local: list[_file_flow.LocalFile],
        biz: int | str | None,
        on_upload: Callable[[int, int], None] | None,
    ) -> Flow[list[dict[str, Any]]]:
        total = sum(item.size for item in local)
        done = 0
        uploads = []
        for item in local:

            def report(sent: int, before: int = done) -> None:
                if on_upload is not None:
                    on_upload(before + sent, total)

            uploads.append((yield from self._upload(item, biz, report)))
            done += item.size
        return uploads

    def _source_logs(
        self,
        job_instance_id: int,
        step_instance_id: int,
        remote_files: Sequence[tuple[Sequence[str], Sequence[str]]] | None,
        bk_cloud_id: int,
        biz: int | str | None,
    ) -> Flow[list[FileLog]]:
        logs = _flow.StepLogs()
        for chunk in _flow.chunks(_file_flow.source_ips(remote_files, bk_cloud_id)):
            logs.add(
                (
                    yield from self.batch_get_job_instance_ip_log(
                        job_instance_id, step_instance_id, ip_list=chunk, **biz_scope(biz)
                    )
                )
            )
        return _file_flow.upload_logs(logs)
