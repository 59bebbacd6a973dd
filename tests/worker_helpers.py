"""Helpers of the tests that start several training worker processes on localhost."""

import json
import socket


def tf_config(index: int, ports=(12345, 12346), kind: str = "worker") -> str:
    """``TF_CONFIG`` of worker ``index`` of a cluster of local workers on ``ports``."""
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


def free_ports(n: int) -> list[int]:
    """``n`` ports free on localhost (bound together, so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
