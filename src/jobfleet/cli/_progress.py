"""Live progress bars while a job or a transfer runs (terminals only)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console

from jobfleet.cli._render import noun_for, run_status_label

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from jobfleet.sdk import JobProgress

# rich.progress is imported by the bars themselves, on a terminal only: a pipe, a
# redirect or a test never shows one and never pays for the import


class RunProgress:
    """A transient bar of hosts done / failed / total while a job runs (terminals only)."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if enabled and console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )

    def __enter__(self) -> RunProgress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("submitting", total=None, failed="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, progress: JobProgress) -> None:
        if self._progress is None or self._task is None:
            return
        self._progress.update(
            self._task,
            description=f"job {progress.job_instance_id} {run_status_label(progress.status)}",
            total=progress.total or None,
            completed=progress.done,
            failed=f"[red]{progress.failed} failed[/]" if progress.failed else "",
        )


class TransferBar:
    """A transient bar of bytes moved, with the hosts done / failed, for file jobs
    (terminals only). The same bar shows an upload, the job, then downloads."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._phase = ""
        if enabled and console.is_terminal:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TextColumn("{task.fields[hosts]}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )

    def __enter__(self) -> TransferBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _show(self, phase: str, description: str, done: int, total: int | None, hosts: str) -> None:
        if self._progress is None:
            return
        if phase != self._phase or self._task is None:
            # a new phase starts its own bar, so the speed column restarts too
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(description, total=total, hosts=hosts)
            self._phase = phase
        self._progress.update(
            self._task, description=description, total=total, completed=done, hosts=hosts
        )

    def upload(self, sent: int, total: int) -> None:
        self._show("upload", "uploading to the server", sent, total, "")

    def download(self, received: int, total: int) -> None:
        self._show("download", "downloading", received, total, "")

    def update(self, progress: JobProgress) -> None:
        from jobfleet.sdk import TransferProgress

        if progress.total:
            hosts = f"{progress.done}/{progress.total} {noun_for(progress.total, 'host')}"
        else:
            hosts = "no hosts yet"
        if progress.failed:
            hosts += f" [red]{progress.failed} failed[/]"
        description = f"job {progress.job_instance_id} {run_status_label(progress.status)}"
        if isinstance(progress, TransferProgress) and progress.bytes_total:
            self._show("job", description, progress.bytes_done, progress.bytes_total, hosts)
        else:
            self._show("job", description, 0, None, hosts)
