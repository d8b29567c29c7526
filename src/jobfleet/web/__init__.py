"""The web console: server-rendered pages and static assets shipped in the package."""

from jobfleet.web.pages import console_router

__all__ = ["console_router"]
