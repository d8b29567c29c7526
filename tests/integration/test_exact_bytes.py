"""Scripts and files in any encoding reach the host byte for byte, through real agents.

Fleets hold GBK ``.bat`` files, Latin-1 shell scripts and binary-ish config files: what a
caller sends as base64 runs or lands exactly, is refused with a reason where it can only
be kept as text, and is still checked by dangerous-statement rules.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from tests.integration.harness import Running, b64

IP = "127.0.0.93"
BIZ = {"bk_scope_type": "biz", "bk_scope_id": "2"}
TARGET = {"ip_list": [{"ip": IP, "bk_cloud_id": 0}]}
# "中文" in GBK, "é" in Latin-1, and a byte no encoding of these starts a character with
GBK_SCRIPT = (
    b"# \xd6\xd0\xce\xc4 GBK, \xe9 Latin-1, \xff invalid\n"
    b'sha256sum "$0" | cut -c1-64\n'
    b"printf '%s' '\xc4\xe3\xba\xc3\xe9' | od -An -tx1\n"
)


def raw64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def run_body(script: bytes, **extra: Any) -> dict[str, Any]:
    return {**BIZ, "script_content": raw64(script), "script_language": 1,
            "account_alias": "root", "target_server": TARGET, **extra}



async def succeeded(running: Running, script: bytes) -> tuple[dict[str, Any], str]:
    """The job of ``script`` on ``IP``, which must succeed, and the host's log."""
    answer = await running.wire.v3("fast_execute_script", run_body(script))
    assert answer["result"], answer
    job: dict[str, Any] = answer["data"]
    data = await running.wire.wait(job["job_instance_id"])
    assert data["job_instance"]["status"] == 3, data
    log = (await running.wire.logs(job["job_instance_id"], job["step_instance_id"], [IP]))[IP]
    return job, log

async def test_a_gbk_script_runs_its_exact_bytes(running: Running) -> None:
    await running.start_agents([IP])
    job, log = await succeeded(running, GBK_SCRIPT)
    # the file the agent wrote and ran is the caller's bytes, and so is each literal in it
    assert hashlib.sha256(GBK_SCRIPT).hexdigest() in log, log
    assert "c4 e3 ba c3 e9" in log, log
    # the job's script is given back as sent
    detail = await running.wire.v3("get_step_instance_detail", {
        "bk_biz_id": 2, "job_instance_id": job["job_instance_id"],
        "step_instance_id": job["step_instance_id"]}, method="GET")
    assert detail["data"]["script_info"]["script_content"] == raw64(GBK_SCRIPT)


async def test_a_gbk_config_file_arrives_byte_exact(running: Running, tmp_path: Path) -> None:
    await running.start_agents([IP])
    content = b"[main]\r\nname=\xd6\xd0\xce\xc4\r\nlatin=\xe9\n\xff\xfe\x00\x01tail"
    answer = await running.wire.v3("push_config_file", {
        "bk_biz_id": 2, "account_alias": "root", "file_target_path": f"{tmp_path}/etc",
        "file_list": [{"file_name": "app.ini", "content": raw64(content)}],
        "target_server": TARGET})
    assert answer["result"], answer
    data = await running.wire.wait(answer["data"]["job_instance_id"])
    assert data["job_instance"]["status"] == 3, data
    landed = (tmp_path / "etc" / "app.ini").read_bytes()
    assert hashlib.sha256(landed).hexdigest() == hashlib.sha256(content).hexdigest()


async def test_stored_scripts_keep_their_text_exactly_or_refuse(running: Running) -> None:
    wire = running.wire
    text = "@echo off\r\nREM 中文 ünïcode\r\necho done\r\n"
    made = await wire.v3("create_script", {
        **BIZ, "name": "exact", "script_language": 2, "content": b64(text), "version": "1.0"})
    assert made["result"], made
    script_id = made["data"]["script_id"]
    version = await wire.v3("create_script_version", {
        **BIZ, "script_id": script_id, "content": b64(text + "exit /b 0\r\n"), "version": "2.0"})
    assert version["result"], version
    detail = await wire.v3("get_script_version_detail",
                           {**BIZ, "id": version["data"]["id"]}, method="GET")
    assert detail["data"]["content"].encode() == (text + "exit /b 0\r\n").encode()
    # a version is kept and answered as text: bytes that are not UTF-8 would come back
    # changed, so they are refused with the reason
    gbk = await wire.v3("create_script_version", {
        **BIZ, "script_id": script_id, "content": raw64(b"echo \xd6\xd0\xce\xc4\r\n"),
        "version": "3.0"})
    assert gbk["code"] == 1241010, gbk
    assert "not UTF-8" in gbk["message"] and "offset 5" in gbk["message"], gbk
    new = await wire.v3("create_script", {
        **BIZ, "name": "gbk", "script_language": 2, "content": raw64(b"echo \xd6\xd0\r\n"),
        "version": "1.0"})
    assert new["code"] == 1241010, new
    listing = await wire.v3("get_script_version_list", {**BIZ, "script_id": script_id},
                            method="GET")
    assert listing["data"]["total"] == 2, listing
    # a parameter becomes argv and variables' text: not UTF-8, it is refused, not altered
    param = await wire.v3("fast_execute_script", run_body(
        b"echo $1\n", script_param=raw64(b"\xd6\xd0")))
    assert param["code"] == 1241010 and "script_param" in param["message"], param


async def test_dangerous_rules_match_a_script_with_invalid_bytes(running: Running) -> None:
    """Rules match the text view of a script (U+FFFD for a bad byte, every ASCII byte
    kept): an invalid byte hides no command from them, and what they match on does not
    change what the host runs."""
    await running.start_agents([IP])
    wire = running.wire
    scan = await wire.v3("create_dangerous_rule", {
        "expression": r"sha256sum", "script_language_list": [1], "action": 1,
        "description": "hashing"})
    assert scan["result"], scan
    checked = await wire.v3("check_script", {
        **BIZ, "script_language": 1, "content": raw64(GBK_SCRIPT)})
    assert [(f["line"], f["action"]) for f in checked["data"]] == [(2, 1)], checked
    _job, log = await succeeded(running, GBK_SCRIPT)
    assert hashlib.sha256(GBK_SCRIPT).hexdigest() in log, log
    rule = await wire.v3("create_dangerous_rule", {
        "expression": r"rm\s+-rf\s+/", "script_language_list": [1, 2], "action": 2,
        "description": "no rm -rf /"})
    assert rule["result"], rule
    # an invalid byte before, inside the line and after the command: the shell still
    # runs rm -rf /, so the rule must still see it
    for script in (b"\xff\xfe\nrm -rf /tmp/x\xff\n", b"\xd6\xd0rm -rf /\n",
                   b"echo \xc4\xe3; rm  -rf /var\x80\n",
                   # after a UTF-16 mark, a NUL byte the shell drops
                   b"\xff\xfe\nr\x00m -rf /\n"):
        blocked = await wire.v3("fast_execute_script", run_body(script))
        assert blocked["code"] == 1244019, (script, blocked)
        checked = await wire.v3("check_script", {
            **BIZ, "script_language": 1, "content": raw64(script)})
        assert checked["result"], checked
        assert "no rm -rf /" in [f["description"] for f in checked["data"]], checked


# saved by Windows as "Unicode" (UTF-16 with its byte order mark), CRLF line ends
PS_SCRIPT = "Write-Host nettoyage \u00e9\r\nRemove-Item -Recurse C:\\\r\n"
# perl reads a UTF-16 script with its mark as the text it is: it hashes its own file
# (in BEGIN, while it still holds the file it compiles)
PERL_UTF16 = b"\xff\xfe" + (
    "use Digest::SHA qw(sha256_hex); # \u00e9\r\n"
    'BEGIN { open(my $f, "<:raw", $0) or die; local $/; print sha256_hex(<$f>), "\\n" }\r\n'
).encode("utf-16-le")


async def test_rules_read_a_utf16_script_and_the_host_runs_its_bytes(running: Running) -> None:
    """A script in UTF-16 with its byte order mark holds a NUL byte in each ASCII
    character: rules match the text it is, the launch is refused with the rule's code
    when one blocks it, and when none does the host runs the exact bytes."""
    await running.start_agents([IP])
    wire = running.wire
    rule = await wire.v3("create_dangerous_rule", {
        "expression": r"Remove-Item\s+-Recurse", "script_language_list": [5], "action": 2,
        "description": "no recursive removal"})
    assert rule["result"], rule
    for script in (b"\xff\xfe" + PS_SCRIPT.encode("utf-16-le"),
                   b"\xfe\xff" + PS_SCRIPT.encode("utf-16-be")):
        blocked = await wire.v3("fast_execute_script", run_body(script, script_language=5))
        assert blocked["code"] == 1244019, blocked
        assert "no recursive removal" in blocked["message"], blocked
        assert "at line 2: Remove-Item -Recurse C:\\" in blocked["message"], blocked
        checked = await wire.v3("check_script", {
            **BIZ, "script_language": 5, "content": raw64(script)})
        assert [(f["line"], f["action"], f["line_content"]) for f in checked["data"]] == [
            (2, 2, "Remove-Item -Recurse C:\\")], checked
        # the console's "try it" box asks the same check
        tried = await wire.post("/api/jobfleet/v1/dangerous-rules/check", {
            "script_language": 5, "content": raw64(script)})
        assert tried["data"]["blocked"], tried
    # without the mark the server cannot know how the host will read it: refused
    bare = await wire.v3("fast_execute_script", run_body(
        PS_SCRIPT.encode("utf-16-le"), script_language=5))
    assert bare["code"] == 1241010 and "byte order mark" in bare["message"], bare
    # a rule that only warns lets it run: the host gets the caller's bytes
    scan = await wire.v3("create_dangerous_rule", {
        "expression": r"sha256_hex\(", "script_language_list": [3], "action": 1,
        "description": "hashing"})
    assert scan["result"], scan
    checked = await wire.v3("check_script", {
        **BIZ, "script_language": 3, "content": raw64(PERL_UTF16)})
    assert [(f["line"], f["action"]) for f in checked["data"]] == [(2, 1)], checked
    answer = await wire.v3("fast_execute_script", run_body(PERL_UTF16, script_language=3))
    assert answer["result"], answer
    job = answer["data"]
    data = await wire.wait(job["job_instance_id"])
    log = (await wire.logs(job["job_instance_id"], job["step_instance_id"], [IP]))[IP]
    assert data["job_instance"]["status"] == 3, (data, log)
    assert log.startswith(hashlib.sha256(PERL_UTF16).hexdigest()), log
    detail = await wire.v3("get_step_instance_detail", {
        "bk_biz_id": 2, "job_instance_id": job["job_instance_id"],
        "step_instance_id": job["step_instance_id"]}, method="GET")
    assert detail["data"]["script_info"]["script_content"] == raw64(PERL_UTF16), detail


async def test_output_split_characters_and_invalid_bytes_in_the_log(running: Running) -> None:
    """bk-job shows output as text: a character split across two reads stays whole,
    bytes that are not UTF-8 show as U+FFFD, NUL as U+2400, and the answer is JSON."""
    await running.start_agents([IP])
    script = (b"printf '\\344\\270'; sleep 0.3; printf '\\255 end\\n'\n"
              b"printf 'gbk \\326\\320\\316\\304 nul \\000 done\\n'\n")
    _job, log = await succeeded(running, script)
    assert "中 end\n" in log, log
    assert "gbk \ufffd\ufffd\ufffd\ufffd nul \u2400 done\n" in log, log
