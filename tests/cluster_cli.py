"""``scripts/cluster up|down|status [STATE_DIR]``: the local cluster of tests/cluster.py."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.cluster import STATE, Cluster

USAGE = "usage: scripts/cluster up|down|status [STATE_DIR]"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up", "down", "status") or len(argv) > 2:
        print(USAGE, file=sys.stderr)
        return 2
    command = argv[0]
    root = Path(argv[1] if len(argv) > 1 else "tdedge-cluster").resolve()
    running = (root / STATE).exists()
    if command == "up":
        if running or (root.exists() and any(root.iterdir())):
            # Its servers' data would be started afresh around it: refuse instead.
            print(
                f"{root} is not empty (a cluster was set up there): scripts/cluster down "
                "it and remove it, or give another STATE_DIR",
                file=sys.stderr,
            )
            return 1
        print(f"starting PostgreSQL, SeaweedFS, 2 nodes and HAProxy in {root} ...", flush=True)
        try:
            cluster = Cluster.up(root)
        except RuntimeError as e:  # a part did not start: what it said
            print(f"cluster not started: {e}", file=sys.stderr)
            return 1
        write = cluster.state.write_key
        print(f"""
tdedge cluster up: {cluster.url}  (HAProxy; nodes {cluster.node_url(0)}, {cluster.node_url(1)})
  master key: {cluster.state.master_key}
  write key:  {write}

Try it:
  curl -X POST -H 'Content-Type: application/json' -H 'X-TD-Write-Key: {write}' \\
    --data-binary '{{"param1":"value1"}}' {cluster.url}/postback/v3/event/test_db/test_tbl
Stop it:
  scripts/cluster down {root}""")
        return 0
    if not running:
        print(f"no cluster in {root}", file=sys.stderr)
        return 1
    cluster = Cluster.load(root)
    if command == "status":
        for part, state in cluster.status():
            print(f"{part:40} {state}")
        return 0
    cluster.down()
    (root / STATE).unlink()
    print(f"stopped; its data and logs stay in {root} (remove it before the next up)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
