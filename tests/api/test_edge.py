from typing import Any

from starlette.types import Receive, Scope, Send

from jobfleet.api.edge import MergeSlashes


async def seen_path(path: str, kind: str = "http") -> tuple[str, bytes]:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    async def nothing(*_: Any) -> Any:
        return None

    await MergeSlashes(app)({"type": kind, "path": path, "raw_path": path.encode()},
                            nothing, nothing)
    return seen[0]["path"], seen[0]["raw_path"]


async def test_runs_of_slashes_in_api_paths_merge() -> None:
    assert await seen_path("//api/c/compapi/v2/jobv3//fast_execute_script/") == (
        "/api/c/compapi/v2/jobv3/fast_execute_script/",
        b"/api/c/compapi/v2/jobv3/fast_execute_script/")
    assert (await seen_path("/api/bk-gse/prod///api/v2/cluster/list_agent_state"))[0] == \
        "/api/bk-gse/prod/api/v2/cluster/list_agent_state"


async def test_other_paths_and_websockets_stay_as_they_came() -> None:
    assert await seen_path("/api/c/compapi/v2/jobv3/x") == ("/api/c/compapi/v2/jobv3/x",
                                                          b"/api/c/compapi/v2/jobv3/x")
    # the console's paths are not the gateways' to rewrite
    assert (await seen_path("//templates//1"))[0] == "//templates//1"
    assert (await seen_path("//api//x", "websocket"))[0] == "//api//x"
