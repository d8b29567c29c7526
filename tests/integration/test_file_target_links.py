"""A target's symlinks below the target path: a local user of a target host who may write
in the target directory must not steer the copy elsewhere by pre-creating a symlink
where the source tree has a directory (or a file)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import Running
from tests.integration.test_file_transfer import run_transfer, transfer_body

SOURCE = "127.0.0.2"
TARGET = "127.0.0.4"


async def test_a_symlink_below_the_target_path_is_never_followed(
    running: Running, tmp_path: Path
) -> None:
    await running.start_agents([SOURCE, TARGET])
    top = tmp_path / "src" / "top"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "x.conf").write_text("planted\n")
    (top / "fine.txt").write_text("fine\n")
    (top / "link.txt").write_text("link\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("untouched\n")
    # the operator's target path is itself a symlink: that one is followed
    real = tmp_path / "real"
    (real / "top").mkdir(parents=True)
    (tmp_path / "dest").symlink_to(real)
    (real / "top" / "sub").symlink_to(outside)
    (real / "top" / "link.txt").symlink_to(outside / "victim.txt")
    sub, data = await run_transfer(running, transfer_body(
        [str(top)], [SOURCE], [TARGET], f"{tmp_path}/dest/", timeout=60), timeout=60)
    assert data["job_instance"]["status"] == 4, data
    result = data["step_instance_list"][0]["step_ip_result_list"][0]
    assert result["ip"] == TARGET and result["status"] == 202, result
    # nothing was written through either symlink
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_text() == "untouched\n"
    assert (real / "top" / "sub").is_symlink() and (real / "top" / "link.txt").is_symlink()
    # the rest of the tree arrived, through the operator's own symlink
    assert (real / "top" / "fine.txt").read_text() == "fine\n"
    logs = await running.wire.v3("get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
        "step_instance_id": sub["step_instance_id"], "bk_cloud_id": 0, "ip": TARGET},
        method="GET")
    text = "\n".join(f["log_content"] for f in logs["data"]["file_logs"])
    assert f"{tmp_path}/dest/top/sub is a symbolic link" in text, text
    assert f"{tmp_path}/dest/top/link.txt is a symbolic link" in text, text
