"""GSE calls given values of the wrong type or form: refused with the bk-job envelope."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event
from tests.integration.harness import Running, eventually
from tests.integration.test_gse_procs import finished

V2 = "/api/bk-gse/prod/api/v2"
V1 = "/api/c/compapi/v2/gse"
IP = "127.0.0.2"
META = {"namespace": "nodeman", "name": "daemon"}


async def test_a_cloud_id_that_is_no_integer_is_refused(running: Running) -> None:
    """``bk_cloud_id`` 0.9, true or non-ASCII digits names no cloud: it is refused, never
    read as cloud 0 or 1 (which would answer for, or operate on, another host)."""
    await running.start_agents([IP])
    wire = running.wire
    for cloud in (0.9, 0.5, True, False, "\u0660", "1e0", [0], {"a": 0}):
        hosts = [{"ip": IP, "bk_cloud_id": cloud}]
        for path, body in (
            (f"{V1}/get_agent_status", {"hosts": hosts}),
            (f"{V1}/get_agent_info", {"hosts": hosts}),
            (f"{V2}/proc/get_proc_status_v2", {"meta": META, "hosts": hosts}),
            (f"{V1}/get_proc_status", {"meta": META, "hosts": hosts}),
            (f"{V1}/operate_proc", {"meta": META, "op_type": 2, "hosts": hosts}),
        ):
            answer: dict[str, Any] = await wire.post(path, body)
            assert (answer["result"], answer["code"]) == (False, 1241010), (cloud, path, answer)
            assert "bk_cloud_id" in answer["message"], answer
    # integers, integral numbers and decimal text are clouds as before
    for cloud in (0, 0.0, "0", " 0 ", None):
        answer = await wire.post(f"{V1}/get_agent_status",
                                 {"hosts": [{"ip": IP, "bk_cloud_id": cloud}]})
        assert answer["result"], (cloud, answer)
        assert answer["data"][f"0:{IP}"]["bk_agent_alive"] == 1, answer


async def test_process_labels_are_a_small_object(running: Running) -> None:
    """``meta.labels`` is echoed for every host a status query names: anything but a small
    object of text is refused, so that the answer cannot grow with it host after host."""
    await running.start_agents([IP])
    wire = running.wire
    for labels in ("y" * 100_000, [1, 2], {"k": "v" * 100_000}, {"k": {"deep": 1}},
                   {f"k{i}": "v" for i in range(1000)}, {"k" * 1000: "v"}):
        for path, body in (
            (f"{V2}/proc/get_proc_status_v2",
             {"meta": {**META, "labels": labels}, "agent_id_list": [f"0:{IP}"]}),
            (f"{V2}/proc/operate_proc_multi", {"proc_operate_req": [
                {"meta": {**META, "labels": labels}, "op_type": 2,
                 "agent_id_list": [f"0:{IP}"]}]}),
        ):
            answer = await wire.post(path, body)
            assert answer["result"] is False, (path, answer)
            assert answer["code"] in (1241005, 1241010), (path, answer)
            assert "labels" in answer["message"], answer
    labels = {"proc_name": "daemon", "bk_biz_id": "2"}
    answer = await wire.post(f"{V2}/proc/get_proc_status_v2",
                             {"meta": {**META, "labels": labels}, "agent_id_list": [f"0:{IP}"]})
    assert answer["result"], answer
    assert answer["data"]["proc_infos"][0]["meta"]["labels"] == labels, answer


async def test_an_agent_id_longer_than_a_stored_one_is_refused(running: Running) -> None:
    """An operation stores the agent id each host was named by, in 255 characters: a
    longer one (``"000…0:<ip>"``, an ip padded with spaces) is refused before any work,
    as on PostgreSQL the task could not be stored."""
    await running.start_agents([IP])
    wire = running.wire
    padded = "0" * 300 + f":{IP}"
    for path, body in (
        (f"{V2}/proc/operate_proc_multi",
         {"proc_operate_req": [{"meta": META, "op_type": 2, "agent_id_list": [padded]}]}),
        (f"{V1}/operate_proc",
         {"meta": META, "op_type": 2, "hosts": [{"ip": " " * 300 + IP, "bk_cloud_id": 0}]}),
        (f"{V2}/proc/get_proc_status_v2", {"meta": META, "agent_id_list": [padded]}),
    ):
        answer = await wire.post(path, body)
        assert (answer["result"], answer["code"]) == (False, 1241010), (path, answer)
        assert "agent_id_list" in answer["message"], answer
    # a short one with a leading zero still names the host
    answer = await wire.post(f"{V2}/proc/operate_proc_multi", {"proc_operate_req": [
        {"meta": META, "op_type": 2, "agent_id_list": [f"00:{IP}"]}]})
    assert answer["result"], answer


async def test_agents_named_by_their_id_are_read_by_that_id(running: Running) -> None:
    """Agent ids that are no ``"<cloud>:<ip>"`` are looked up by the hosts' indexed agent id:
    a query naming a few agents never reads the whole inventory."""
    await running.start_agents([IP])
    for i in range(3):
        await running.server.inventory.add(2, f"127.9.0.{i}")
    [host] = [h for h in await running.server.inventory.list() if h.ip == IP]
    assert host.agent_id
    whole: list[str] = []

    def unfiltered(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = " ".join(statement.split()).upper()
        if text.startswith("SELECT") and "FROM HOSTS" in text and "WHERE" not in text:
            whole.append(statement)

    engine = running.server.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", unfiltered)
    try:
        for name in ("list_agent_state", "list_agent_info"):
            answer = await running.wire.post(f"{V2}/cluster/{name}", {
                "agent_id_list": [host.agent_id, "no-such-agent", f"0:{IP}"]})
            assert answer["result"], answer
            assert [a["bk_agent_id"] for a in answer["data"]] == [host.agent_id, f"0:{IP}"]
        status = await running.wire.post(f"{V2}/proc/get_proc_status_v2", {
            "meta": META, "agent_id_list": [host.agent_id]})
        assert status["result"], status
        assert status["data"]["proc_infos"][0]["host"]["ip"] == IP, status
    finally:
        event.remove(engine, "before_cursor_execute", unfiltered)
    assert whole == []


async def test_many_cloud_areas_cost_a_few_queries(running: Running) -> None:
    """Hosts named in 5,000 cloud areas (as many as one query names), none but one holding a
    host, are looked up in a few statements, not one statement a cloud area."""
    await running.start_agents([IP])
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = " ".join(statement.split()).upper()
        if text.startswith("SELECT") and "FROM HOSTS" in text:
            reads.append(statement)

    hosts = [{"ip": IP, "bk_cloud_id": cloud} for cloud in range(5000)]
    engine = running.server.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        answer = await running.wire.post(f"{V1}/get_agent_status", {"hosts": hosts})
        state = await running.wire.post(f"{V2}/cluster/list_agent_state", {
            "agent_id_list": [f"{cloud}:{IP}" for cloud in range(5000)]})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert answer["result"], answer
    assert len(answer["data"]) == 5000
    assert answer["data"][f"0:{IP}"]["bk_agent_alive"] == 1
    assert answer["data"][f"1:{IP}"]["bk_agent_alive"] == 0
    assert state["result"], state
    assert [a["bk_agent_id"] for a in state["data"]] == [f"0:{IP}"]
    assert len(reads) <= 20, len(reads)


async def test_a_dual_stack_host_is_named_by_its_ipv6_address(running: Running) -> None:
    """A host that reports an IPv6 address besides its ip is named by either, as in a job's
    ``ip_list``; an IPv6 address two hosts report names neither. An IPv4 address in IPv6
    form is that IPv4 address: it names its host, in the answer by its IPv4 form."""
    # on loopback, ::1 is the one IPv6 address that spells no IPv4 address
    v21 = str(ipaddress.IPv6Address("::ffff:127.0.0.21"))
    agents = {"127.0.0.21": {"ipv6": "::1"},
              "127.0.0.23": {"ipv6": v21},
              "127.0.0.24": {"ipv6": v21}}
    await running.start_agents(list(agents), settings_of=agents)

    async def reported() -> bool:
        v6 = {h.ip: h.ipv6 for h in await running.server.inventory.list()}
        return v6 == {"127.0.0.21": "::1", "127.0.0.23": "", "127.0.0.24": ""}
    await eventually(reported)
    wire = running.wire
    hosts = [{"ip": "0::1", "bk_cloud_id": 0},
             {"ip": v21, "bk_cloud_id": 0},
             {"ip": "127.0.0.23", "bk_cloud_id": 0}]
    status = await wire.post(f"{V1}/get_agent_status", {"hosts": hosts})
    assert status["result"], status
    assert {k: v["bk_agent_alive"] for k, v in status["data"].items()} == {
        "0:::1": 1, "0:127.0.0.21": 1, "0:127.0.0.23": 1}
    info = await wire.post(f"{V1}/get_agent_info", {"hosts": hosts})
    assert sorted(info["data"]) == ["0:127.0.0.21", "0:127.0.0.23", "0:::1"], info
    state = await wire.post(f"{V2}/cluster/list_agent_state",
                            {"agent_id_list": ["0:::1", f"0:{v21}"]})
    assert state["result"], state
    assert [(a["bk_agent_id"], a["status_code"]) for a in state["data"]] == [
        ("0:::1", 2), (f"0:{v21}", 2)]
    procs = await wire.post(f"{V2}/proc/get_proc_status_v2",
                            {"meta": META, "agent_id_list": ["0:::1"]})
    assert procs["result"], procs
    assert procs["data"]["proc_infos"][0]["host"]["ip"] == "127.0.0.21", procs
    # ::1 once two hosts report it names neither
    await running.start_agents(["127.0.0.25"], settings_of={"127.0.0.25": {"ipv6": "::1"}})
    ambiguous = await wire.post(f"{V2}/proc/get_proc_status_v2",
                                {"meta": META, "agent_id_list": ["0:::1"]})
    assert ambiguous["result"] and ambiguous["data"] == {"proc_infos": []}, ambiguous


async def test_one_operation_a_host_is_taken_for_thousands_of_hosts(running: Running) -> None:
    """bk-nodeman sends one ``proc_operate_req`` entry for each host and plugin (``hosts``
    naming one host): a request of 150 entries is taken; what bounds a request is the
    5,000 host operations it asks for in all, however they are spread over its entries."""
    await running.start_agents([IP])
    wire = running.wire
    entries = [{"meta": {"namespace": "nodeman", "name": f"p{i}"}, "op_type": 2,
                "hosts": [{"ip": IP, "bk_cloud_id": 0}], "nodeman_spec": {"id": i}}
               for i in range(150)]
    answer = await wire.post(f"{V2}/proc/operate_proc_multi", {"proc_operate_req": entries})
    assert answer["result"], answer
    results = await finished(wire, answer["data"]["task_id"], timeout=60)
    assert sorted(results) == sorted(f"0:{IP}:nodeman:p{i}" for i in range(150))
    # 2,501 entries of 2 hosts each: 5,002 host operations
    await running.server.inventory.add(2, "127.8.0.1")
    too_many = await wire.post(f"{V2}/proc/operate_proc_multi", {"proc_operate_req": [
        {"meta": {"namespace": "nodeman", "name": f"q{i}"}, "op_type": 2,
         "agent_id_list": [f"0:{IP}", "0:127.8.0.1"]} for i in range(2501)]})
    assert (too_many["result"], too_many["code"]) == (False, 1241010), too_many
    assert "5000" in too_many["message"], too_many


async def test_bk_nodeman_gse1_process_calls_are_served(running: Running) -> None:
    """bk-nodeman's GSE 1.0 adapter makes the process calls over ESB by their 2.0 names:
    ``/api/c/compapi/v2/gse/{operate_proc_multi,operate_proc_v2,get_proc_operate_result_v2,
    get_proc_status_v2}/``, naming hosts by ``hosts``."""
    await running.start_agents([IP])
    wire = running.wire
    hosts = [{"ip": IP, "bk_cloud_id": 0}]
    started = await wire.post(f"{V1}/operate_proc_multi/", {"proc_operate_req": [
        {"meta": META, "op_type": 2, "hosts": hosts}]})
    assert started["result"], started
    single = await wire.post(f"{V1}/operate_proc_v2/", {"meta": META, "op_type": 2,
                                                       "hosts": hosts})
    assert single["result"], single
    for task in (started, single):
        results = await finished(wire, task["data"]["task_id"],
                                 path=f"{V1}/get_proc_operate_result_v2/")
        assert list(results) == [f"0:{IP}:nodeman:daemon"]
    status = await wire.post(f"{V1}/get_proc_status_v2/", {"meta": META, "hosts": hosts})
    assert status["result"], status
    assert status["data"]["proc_infos"][0]["host"]["ip"] == IP, status


async def test_bk_nodemans_process_check_is_taken(running: Running) -> None:
    """bk-nodeman's process sync checks CMDB processes with the CMDB's fields as they are:
    ``start_check_secs`` and ``op_timeout`` null when the process sets none, an integer
    label, empty commands and paths. Null is the default, not an invalid value."""
    await running.start_agents([IP])
    entry = {
        "meta": {"namespace": "bknodeman_2", "name": "nginx_1",
                 "labels": {"bk_process_name": "nginx", "bk_process_id": 42}},
        "op_type": 2,
        "hosts": [{"ip": IP, "bk_cloud_id": 0}],
        "spec": {
            "identity": {"index_key": "", "proc_name": "nginx", "setup_path": "",
                         "pid_path": "", "user": None},
            "control": {"start_cmd": "", "stop_cmd": "", "restart_cmd": "",
                        "reload_cmd": "", "kill_cmd": ""},
            "alive_monitor_policy": {"auto_type": 1, "start_check_secs": None,
                                     "op_timeout": None},
        },
    }
    answer = await running.wire.post(f"{V2}/proc/operate_proc_multi",
                                     {"proc_operate_req": [entry]})
    assert answer["result"], answer


async def test_an_operation_result_content_reads_as_bk_nodeman_reads_it(running: Running) -> None:
    """bk-nodeman's process check reads ``json.loads(content)["process"][0]["instance"][0]``
    (``pid``, ``isAuto``); a KeyError there counts the process as terminated."""
    await running.start_agents([IP])
    wire = running.wire
    answer = await wire.post(f"{V2}/proc/operate_proc_multi", {"proc_operate_req": [
        {"meta": META, "op_type": 2, "agent_id_list": [f"0:{IP}"]}]})
    assert answer["result"], answer
    results = await finished(wire, answer["data"]["task_id"])
    content = json.loads(results[f"0:{IP}:nodeman:daemon"]["content"])
    instance = content["process"][0]["instance"][0]
    assert instance["pid"] == -1 and instance["isAuto"] is False, content
    # and as before, under "value" with the agent's id
    assert content["value"][0]["bk_agent_id"] == f"0:{IP}", content
    assert content["value"][0]["process"] == content["process"], content


async def test_a_long_address_is_not_echoed_whole(running: Running) -> None:
    """A megabyte ``ip`` is refused with a message that quotes a bounded part of it."""
    wire = running.wire
    ip = "1" * 1_000_000
    for path, body in (
        (f"{V1}/get_agent_status", {"hosts": [{"ip": ip, "bk_cloud_id": 0}]}),
        (f"{V1}/get_agent_info", {"hosts": [{"ip": ip, "bk_cloud_id": 0}]}),
    ):
        answer = await wire.post(path, body)
        assert (answer["result"], answer["code"]) == (False, 1241010), path
        assert "is not an IP address" in answer["message"]
        assert len(answer["message"]) < 300, len(answer["message"])


async def test_an_agent_id_that_is_no_text_is_refused(running: Running) -> None:
    """An ``agent_id_list`` item is text, as GSE reads it: an object, a list, a number,
    true or null is refused, not turned into its Python text and answered as unknown."""
    await running.start_agents([IP])
    wire = running.wire
    for item in ({"a": 1}, ["0:" + IP], 1.5, 7, True, None):
        for path, body in (
            (f"{V2}/cluster/list_agent_state", {"agent_id_list": [f"0:{IP}", item]}),
            (f"{V2}/cluster/list_agent_info", {"agent_id_list": [f"0:{IP}", item]}),
            (f"{V2}/cluster/dispatch_message", {"message_id": "m", "content": "x",
                                                "slot_id": 1,
                                                "agent_id_list": [f"0:{IP}", item]}),
            (f"{V2}/proc/get_proc_status_v2", {"meta": META,
                                               "agent_id_list": [f"0:{IP}", item]}),
            (f"{V2}/proc/operate_proc_multi", {"proc_operate_req": [
                {"meta": META, "op_type": 2, "agent_id_list": [f"0:{IP}", item]}]}),
        ):
            answer = await wire.post(path, body)
            assert (answer["result"], answer["code"]) == (False, 1241010), (item, path, answer)
            assert "agent_id_list" in answer["message"], answer


async def test_a_message_goes_once_to_a_host_named_many_times(running: Running) -> None:
    """``dispatch_message`` naming one agent 1,000 ways (``"0:<ip>"``, ``"00:<ip>"``, …)
    hands the megabyte once to that agent, not 1,000 times; each id is still answered."""
    await running.start_agents([IP])
    procs = running.server.services.procs
    assert procs is not None
    calls: list[int] = []
    real = procs.agents.call

    async def counted(host: int, request: dict[str, Any], timeout: float) -> Any:
        if request.get("t") == "dispatch":
            calls.append(host)
        return await real(host, request, timeout)

    procs.agents.call = counted  # type: ignore[method-assign]
    try:
        ids = [f"{'0' * n}:{IP}" for n in range(1, 1001)]
        sent = await running.wire.post(f"{V2}/cluster/dispatch_message", {
            "message_id": "m-many", "agent_id_list": ids, "content": "x" * 1_000_000,
            "slot_id": 3})
    finally:
        procs.agents.call = real  # type: ignore[method-assign]
    assert sent["result"], sent
    assert [r["error_code"] for r in sent["data"]["results"]] == [0] * 1000
    assert len(calls) == 1, len(calls)


def undelegate(names: list[str], agent_id: str) -> list[dict[str, Any]]:
    return [{"meta": {"namespace": "nodeman", "name": name}, "op_type": 4,
             "agent_id_list": [agent_id], "spec": {"identity": {"user": "root"}}}
            for name in names]


async def test_many_process_operations_cost_a_few_queries(running: Running) -> None:
    """bk-nodeman sends an operate_proc_multi entry for each host and plugin: the hosts and
    accounts of 1,000 entries are looked up in as many statements as those of 10, and an
    entry's refusal still waits for every entry before it to pass."""
    await running.start_agents([IP])
    agent = f"0:{IP}"
    engine = running.server.db.engine.sync_engine

    async def statements(entries: int) -> tuple[list[str], dict[str, Any]]:
        seen: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            text = " ".join(statement.split()).upper()
            # the operation's results are written as the agent answers, meanwhile
            if not text.startswith("UPDATE PROC_RESULTS"):
                seen.append(text)

        names = [f"plugin-{entries}-{i}" for i in range(entries)]
        event.listen(engine, "before_cursor_execute", count)
        try:
            started = time.monotonic()
            answer = await running.wire.post(f"{V2}/proc/operate_proc_multi",
                                             {"proc_operate_req": undelegate(names, agent)})
            print(f"operate_proc_multi, {entries} entries: {time.monotonic() - started:.2f} s, "
                  f"{len(seen)} statements")
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return seen, answer

    few, answer = await statements(10)
    assert answer["result"], answer
    many, answer = await statements(1000)
    assert answer["result"], answer

    def lookups(seen: list[str]) -> int:
        return sum(1 for s in seen if "FROM HOSTS" in s or "FROM ACCOUNTS" in s)

    assert lookups(many) == lookups(few) <= 6, (lookups(few), lookups(many))
    assert len(many) <= len(few) + 10, (len(few), len(many))

    # an unknown host refuses nothing (it is answered in the task): the second entry's
    # bad op_type, a malformed request, refuses it all
    wire = running.wire
    bad = undelegate(["a", "b"], agent)
    bad[0]["agent_id_list"] = ["0:127.9.9.9"]
    bad[1]["op_type"] = 99
    refused = await wire.post(f"{V2}/proc/operate_proc_multi", {"proc_operate_req": bad})
    assert (refused["result"], refused["code"]) == (False, 1241010), refused
    assert "proc_operate_req[1].op_type" in refused["message"], refused
    # an account the business lacks and an unknown host are each answered on their own
    bad = undelegate(["a", "b"], agent)
    bad[0]["spec"]["identity"]["user"] = "nobody-here"
    bad[1]["agent_id_list"] = ["0:127.9.9.9"]
    answer = await wire.post(f"{V2}/proc/operate_proc_multi", {"proc_operate_req": bad})
    assert answer["result"], answer
    results = await wire.post(f"{V2}/proc/get_proc_operate_result_v2",
                              {"task_id": answer["data"]["task_id"]})
    assert {k: v["error_code"] for k, v in results["data"].items()} == {
        f"{agent}:nodeman:a": 65535, "0:127.9.9.9:nodeman:b": 117}, results
    assert "nobody-here" in results["data"][f"{agent}:nodeman:a"]["error_msg"], results


async def test_an_agent_query_names_at_most_5000_hosts(running: Running) -> None:
    """get_agent_status and get_agent_info answer for up to 5,000 hosts at a time (bk-nodeman
    asks 2,000 at most); more is refused as an invalid parameter, not answered in megabytes."""
    await running.start_agents([IP])
    wire = running.wire
    hosts = [{"ip": f"127.{100 + i // 65536}.{i // 256 % 256}.{i % 256}", "bk_cloud_id": 0}
             for i in range(5000)]
    hosts[0] = {"ip": IP, "bk_cloud_id": 0}
    for name in ("get_agent_status", "get_agent_info"):
        answer = await wire.post(f"{V1}/{name}", {"bk_supplier_account": "0", "hosts": hosts})
        assert answer["result"], answer
        assert f"0:{IP}" in answer["data"], name
        refused = await wire.post(f"{V1}/{name}", {
            "bk_supplier_account": "0", "hosts": [*hosts, {"ip": "127.9.9.9", "bk_cloud_id": 0}]})
        assert (refused["result"], refused["code"]) == (False, 1241010), refused
        assert "hosts" in refused["message"] and "5000" in refused["message"], refused


async def test_a_host_address_that_is_no_ip_is_refused(running: Running) -> None:
    """A process call naming hosts by ``hosts`` whose ``ip`` is no IP address (a number, a
    list, other text) is a malformed request: refused as an invalid parameter naming the
    ip, as get_agent_status refuses it, never answered as an unknown agent."""
    await running.start_agents([IP])
    wire = running.wire
    for ip in (5, [IP], {"a": 1}, "1.2.3", "not-an-ip", "x" * 100_000):
        hosts = [{"ip": IP, "bk_cloud_id": 0}, {"ip": ip, "bk_cloud_id": 0}]
        for path, body in (
            (f"{V2}/proc/operate_proc_multi",
             {"proc_operate_req": [{"meta": META, "op_type": 2, "hosts": hosts}]}),
            (f"{V1}/operate_proc", {"meta": META, "op_type": 2, "hosts": hosts}),
            (f"{V2}/proc/get_proc_status_v2", {"meta": META, "hosts": hosts}),
        ):
            answer = await wire.post(path, body)
            assert answer["result"] is False, (ip, path, answer)
            assert answer["code"] in (1241005, 1241010), (ip, path, answer)
            assert "hosts.ip" in answer["message"] and len(answer["message"]) < 300, answer
    # an address as the client wrote it is still the key of its answer
    answer = await wire.post(f"{V1}/get_proc_status", {
        "meta": META, "hosts": [{"ip": f" {IP}", "bk_cloud_id": 0}]})
    assert [i["host"]["ip"] for i in answer["data"]["proc_infos"]] == [IP], answer


async def test_a_meta_that_is_no_object_is_invalid_not_missing(running: Running) -> None:
    """``meta`` sent as text, a list or a number is there but of the wrong type: refused as
    an invalid parameter, not with a message saying it is missing."""
    await running.start_agents([IP])
    wire = running.wire
    for meta in ("nodeman/daemon", [META], 5, True):
        for path, body in (
            (f"{V2}/proc/operate_proc_multi", {"proc_operate_req": [
                {"meta": meta, "op_type": 2, "agent_id_list": [f"0:{IP}"]}]}),
            (f"{V2}/proc/get_proc_status_v2", {"meta": meta, "agent_id_list": [f"0:{IP}"]}),
        ):
            answer = await wire.post(path, body)
            assert (answer["result"], answer["code"]) == (False, 1241010), (meta, path, answer)
            assert "meta]" in answer["message"] and "Missing" not in answer["message"], answer
    absent = await wire.post(f"{V2}/proc/get_proc_status_v2", {"agent_id_list": [f"0:{IP}"]})
    assert (absent["result"], absent["code"]) == (False, 1241004), absent


async def with_offline_hosts(running: Running, prefix: str) -> list[str]:
    """The agent id of ``IP``'s running agent, then those of 130 hosts with no agent."""
    await running.start_agents([IP])
    offline = [f"{prefix}.{i // 256}.{i % 256}" for i in range(130)]
    for ip in offline:
        await running.server.inventory.add(2, ip)
    return [f"0:{IP}", *(f"0:{ip}" for ip in offline)]


@contextlib.contextmanager
def agent_calls(running: Running) -> Iterator[list[int]]:
    """The hosts the process manager asks its agents about, while in the block."""
    procs = running.server.services.procs
    assert procs is not None
    asked: list[int] = []
    real = procs.agents.call

    async def counted(host: int, request: dict[str, Any], timeout: float) -> Any:
        asked.append(host)
        return await real(host, request, timeout)

    procs.agents.call = counted  # type: ignore[method-assign]
    try:
        yield asked
    finally:
        procs.agents.call = real  # type: ignore[method-assign]


async def test_agents_that_are_not_connected_are_answered_at_once(running: Running) -> None:
    """A status query or a message naming hosts whose agent is not connected answers them
    at once ("not connected"), without waiting on each one in turn: bk-nodeman asks 500
    hosts a call, and a fleet has many hosts down; the connected agent is asked as ever."""
    ids = await with_offline_hosts(running, "127.7")
    with agent_calls(running) as asked:
        status = await running.wire.post(f"{V2}/proc/get_proc_status_v2",
                                         {"meta": META, "agent_id_list": ids})
        sent = await running.wire.post(f"{V2}/cluster/dispatch_message", {
            "message_id": "m-down", "agent_id_list": ids, "content": "x", "slot_id": 3})
    assert status["result"], status
    infos = {i["bk_agent_id"]: i for i in status["data"]["proc_infos"]}
    assert list(infos) == ids
    assert infos[f"0:{IP}"]["message"] == "", infos[f"0:{IP}"]
    for agent_id in ids[1:]:
        assert infos[agent_id]["status"] == 0, infos[agent_id]
        assert "not connected" in infos[agent_id]["message"], infos[agent_id]
    assert sent["result"], sent
    codes = {r["bk_agent_id"]: (r["error_code"], r["error_msg"]) for r in sent["data"]["results"]}
    assert codes[f"0:{IP}"][0] == 0, codes
    assert all(c == 117 and "not connected" in m for c, m in list(codes.values())[1:]), codes
    assert len(asked) == 2, len(asked)  # the connected agent, once a call


async def test_an_operation_answers_hosts_whose_agent_is_not_connected_at_once(
        running: Running) -> None:
    """operate_proc_multi naming hosts whose agent is not connected answers them at once
    (117, "not connected") instead of waiting on each in turn while holding the slots
    every other operation needs; the connected agent is operated on as ever."""
    ids = await with_offline_hosts(running, "127.6")
    with agent_calls(running) as asked:
        answer = await running.wire.post(f"{V2}/proc/operate_proc_multi", {
            "proc_operate_req": [{"meta": META, "op_type": 2, "agent_id_list": ids}]})
        assert answer["result"], answer
        first = await running.wire.post(f"{V2}/proc/get_proc_operate_result_v2",
                                         {"task_id": answer["data"]["task_id"]})
        offline_results = [v for k, v in first["data"].items() if not k.startswith(f"0:{IP}:")]
        assert len(offline_results) == 130, first
        for result in offline_results:
            assert result["error_code"] == 117, result
            assert "not connected" in result["error_msg"], result

        async def done() -> dict[str, Any] | None:
            result = await running.wire.post(f"{V2}/proc/get_proc_operate_result_v2",
                                             {"task_id": answer["data"]["task_id"]})
            own = result["data"][f"0:{IP}:nodeman:daemon"]
            return own if own["error_code"] != 115 else None
        assert (await eventually(done, timeout=30))["error_code"] == 0
    assert len(asked) == 1, len(asked)


async def test_a_host_that_never_had_an_agent_has_no_agent_version(running: Running) -> None:
    """A host of the inventory whose agent never connected reports no agent version
    (``""``, as bk-nodeman fills for an agent GSE does not know), not the server's own:
    bk-nodeman keeps the version it reads as the host's installed agent."""
    await running.start_agents([IP])
    await running.server.inventory.add(2, "127.0.0.61")
    wire = running.wire
    [agent] = [h for h in await running.server.inventory.list() if h.ip == IP]
    assert agent.agent_version
    ids = [f"0:{IP}", "0:127.0.0.61"]
    info = await wire.post(f"{V1}/get_agent_info", {
        "hosts": [{"ip": IP, "bk_cloud_id": 0}, {"ip": "127.0.0.61", "bk_cloud_id": 0}]})
    assert {k: v["version"] for k, v in info["data"].items()} == {
        f"0:{IP}": agent.agent_version, "0:127.0.0.61": ""}, info
    for name in ("list_agent_state", "list_agent_info"):
        answer = await wire.post(f"{V2}/cluster/{name}", {"agent_id_list": ids})
        assert answer["result"], answer
        assert {a["bk_agent_id"]: a["version"] for a in answer["data"]} == {
            f"0:{IP}": agent.agent_version, "0:127.0.0.61": ""}, answer
