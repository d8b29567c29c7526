"""bk-job v3 cron calls."""

from __future__ import annotations

from fastapi import APIRouter


def register(router: APIRouter) -> None:
    pass
