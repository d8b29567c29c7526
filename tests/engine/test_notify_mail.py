"""Mail deliveries against a mail server that never answers."""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor

import orjson

from jobfleet.engine.callbacks import IN_FLIGHT
from jobfleet.engine.notify import MAIL_THREADS, SmtpSettings, send_email


async def test_silent_mail_server_leaves_the_default_executor_free() -> None:
    # a listener that never accepts: every connection waits for a greeting that never comes
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(IN_FLIGHT)
    smtp = SmtpSettings(host="127.0.0.1", port=silent.getsockname()[1], timeout=60.0)
    payload = orjson.dumps({"to": ["ops@example.test"], "subject": "s", "text": "t"}).decode()
    loop = asyncio.get_running_loop()
    # as small as the default executor of a small server (min(32, cores + 4))
    default = ThreadPoolExecutor(max_workers=4)
    loop.set_default_executor(default)
    mails = [
        asyncio.ensure_future(send_email(smtp, i, 1_700_000_000_000, payload))
        for i in range(IN_FLIGHT)
    ]
    try:
        await asyncio.sleep(0.2)
        # what else of the server runs in threads (password checks, file writes, DNS)
        other = asyncio.ensure_future(asyncio.to_thread(sum, [1, 2]))
        done, _ = await asyncio.wait({other}, timeout=10.0)
        assert other in done, "the mail deliveries hold every thread of the default executor"
        assert other.result() == 3
    finally:
        # the waiting connections are reset: the mail threads end at once
        silent.close()
        results = await asyncio.gather(*mails)
        default.shutdown(wait=False)
    assert all(not ok for ok, _error in results)


def test_no_mail_waits_for_a_thread() -> None:
    # a mail queued behind others could outlast its row's claim and be sent again
    assert MAIL_THREADS >= IN_FLIGHT
