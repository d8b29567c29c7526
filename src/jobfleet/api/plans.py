"""bk-job v3 plans calls."""

from __future__ import annotations

from fastapi import APIRouter


def register(router: APIRouter) -> None:
    pass
