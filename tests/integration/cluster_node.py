"""One node of a test cluster, as its own process (so a test can kill -9 it).

``python -m tests.integration.cluster_node '<json>'`` with data_dir, port,
agent_port, database_url, redis_url, node_ttl and engine settings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jobfleet import logs
from jobfleet.server import EngineSettings, ServerSettings, run


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if cfg.get("log_level"):
        logs.setup(cfg["log_level"])
    run(ServerSettings(
        data_dir=Path(cfg["data_dir"]), port=cfg["port"], agent_port=cfg["agent_port"],
        database_url=cfg["database_url"], redis_url=cfg["redis_url"],
        heartbeat=cfg.get("heartbeat", 2.0), log_level=cfg.get("log_level") or "warning",
        # the server's own default when a test leaves it out
        **({"node_ttl": cfg["node_ttl"]} if "node_ttl" in cfg else {}),
        engine=EngineSettings(**cfg["engine"])))


if __name__ == "__main__":
    main()
