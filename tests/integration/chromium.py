"""One Chromium per pytest worker for the console's browser tests (test_console*.py)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.harness import stop_group

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# what Playwright's own launch adds and the tests lean on: pages of other contexts are not
# throttled in the background, no popup or repost prompt, scrollbars hidden as in
# screenshots until now
SHARED_ARGS = ["--disable-background-timer-throttling", "--disable-backgrounding-occluded-windows",
               "--disable-renderer-backgrounding", "--disable-ipc-flooding-protection",
               "--disable-hang-monitor", "--disable-popup-blocking", "--disable-prompt-on-repost",
               "--disable-back-forward-cache", "--disable-breakpad", "--disable-dev-shm-usage",
               "--disable-extensions", "--disable-default-apps", "--no-default-browser-check",
               "--disable-field-trial-config", "--allow-pre-commit-input",
               "--disable-features=AvoidUnnecessaryBeforeUnloadCheckSync,HttpsUpgrades,"
               "HttpsFirstBalancedModeAutoEnable,MediaRouter,PaintHolding,"
               "ThirdPartyStoragePartitioning,OptimizationHints",
               "--password-store=basic", "--use-mock-keychain", "--force-color-profile=srgb",
               "--metrics-recording-only", "--no-service-autorun",
               "--disable-search-engine-choice-screen", "--hide-scrollbars", "--mute-audio",
               "--blink-settings=primaryHoverType=2,availableHoverTypes=2,"
               "primaryPointerType=4,availablePointerTypes=4"]


class SharedChromium:
    """One Chromium for a pytest worker, which each test reaches over its DevTools port:
    a Playwright browser belongs to the event loop that launched it, and each test has
    a loop of its own. Launching Chromium (and closing it) for every test cost about a
    second each on a two-core machine. It is started as a plain process, not by a
    Playwright driver of its own, which would answer the dialogs of the tests' pages."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.endpoint = ""
        self.child: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        shutil.rmtree(self.profile, ignore_errors=True)
        self.profile.mkdir(parents=True)
        with (self.profile.parent / "chromium.log").open("ab") as log:
            self.child = subprocess.Popen(
                [CHROMIUM, *ARGS, *SHARED_ARGS, "--remote-debugging-address=127.0.0.1",
                 "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        # Chromium writes the port it chose into its profile
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        try:
            while not active.exists() or len(active.read_text().split()) < 2:
                assert self.child.poll() is None, (self.profile.parent / "chromium.log").read_text()
                assert time.monotonic() < deadline, "chromium did not open its DevTools port"
                time.sleep(0.05)
        except BaseException:
            # its own session outlives the test run unless its group is ended here
            self.stop()
            raise
        port, path = active.read_text().split()[:2]
        self.endpoint = f"ws://127.0.0.1:{port}{path}"

    def stop(self) -> None:
        child, self.child, self.endpoint = self.child, None, ""
        if child is not None:
            stop_group(child)

    def usable(self) -> str:
        """The endpoint of a running Chromium: a new one if a test's page took it down."""
        if self.child is None or self.child.poll() is not None:
            self.stop()
            self.start()
        return self.endpoint


@pytest.fixture(scope="session")
def shared_chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedChromium]:
    chromium = SharedChromium(tmp_path_factory.mktemp("chromium") / "profile")
    try:
        chromium.start()
        yield chromium
    finally:
        chromium.stop()
