"""Two nodes on one machine: two network namespaces joined by a veth pair (addresses inside
the namespaces only), one `torchdeck train --nnodes 2` in each, no GLOO_SOCKET_IFNAME given
(the launcher picks the interface toward the master address). Skipped where namespaces
cannot be made (not root, no `ip`); the namespaces are deleted whatever happens."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from dist_helpers import Launched, logged_steps, only_run, run_meta, wait_for

IP = shutil.which("ip")
MASTER = "10.213.7.1"
START_S = 240


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)


def _cannot_make_namespaces() -> str:
    if IP is None:
        return "no `ip` command"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"tdprobe{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe)
    if made.returncode:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _ip("netns", "delete", probe)
    return ""


WHY_NOT = _cannot_make_namespaces()
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "namespaces available")


@contextlib.contextmanager
def two_namespaces() -> Iterator[tuple[str, str]]:
    """Namespaces A (MASTER) and B (.2) joined by a veth pair made inside them."""
    tag = f"td{uuid.uuid4().hex[:6]}"
    a, b = f"{tag}a", f"{tag}b"
    try:
        for ns in (a, b):
            made = _ip("netns", "add", ns)
            assert made.returncode == 0, made.stderr
        made = _ip("link", "add", f"{tag}va", "netns", a, "type", "veth",
                   "peer", "name", f"{tag}vb", "netns", b)  # fmt: skip
        assert made.returncode == 0, made.stderr
        for ns, dev, addr in ((a, f"{tag}va", MASTER), (b, f"{tag}vb", "10.213.7.2")):
            for cmd in (
                ["addr", "add", f"{addr}/24", "dev", dev],
                ["link", "set", dev, "up"],
                ["link", "set", "lo", "up"],
            ):
                done = _ip("-n", ns, *cmd)
                assert done.returncode == 0, done.stderr
        yield a, b
    finally:
        for ns in (a, b):
            _ip("netns", "delete", ns)  # takes the veth pair with it
        assert not {a, b} & set(_ip("netns", "list").stdout.split())


def _node(tmp_path, ns: str, rank: int, runs, *sets: str) -> Launched:
    args = ["train", "digits-cnn", "--nproc", "1", "--nnodes", "2", "--node-rank", str(rank),
            "--master-addr", MASTER, "--master-port", "29517", "--runs-dir", str(runs)]  # fmt: skip
    for s in sets:
        args += ["--set", s]
    env = {"GLOO_SOCKET_IFNAME": "", "NCCL_SOCKET_IFNAME": ""}  # picked by the launcher
    return Launched(args, tmp_path / "out", prefix=[IP, "netns", "exec", ns], env=env)


def test_two_nodes_in_two_namespaces_train_one_run(tmp_path):
    runs = tmp_path / "runs"
    with two_namespaces() as (a, b):
        nodes = [_node(tmp_path, a, 0, runs, "train.epochs=2"),
                 _node(tmp_path, b, 1, runs, "train.epochs=2")]  # fmt: skip
        try:
            for node in nodes:
                assert node.wait(timeout=300) == 0, node.err()[-3000:]
            assert "failed" not in nodes[1].err()
            folder = only_run(runs)  # one run folder, made by rank 0
            meta = run_meta(folder)
            assert meta["run"]["status"] == "finished" and meta["run"]["world_size"] == 2
            assert meta["summary"]["steps"] == 90
        finally:
            for node in nodes:
                node.end()


def test_killing_one_node_fails_the_other_within_seconds(tmp_path):
    runs = tmp_path / "runs"
    with two_namespaces() as (a, b):
        nodes = [_node(tmp_path, a, 0, runs, "train.epochs=500"),
                 _node(tmp_path, b, 1, runs, "train.epochs=500")]  # fmt: skip
        try:
            wait_for(lambda: logged_steps(runs) >= 20, START_S, "the first logged steps")
            nodes[1].signal(signal.SIGKILL)  # node 1's launcher and its process group
            code = wait_for(lambda: nodes[0].proc.poll() is not None and [nodes[0].proc.poll()],
                            10, "node 0 to end")  # fmt: skip
            assert code == [1], nodes[0].err()[-3000:]
            meta = run_meta(only_run(runs))
            assert meta["run"]["status"] == "failed", meta
            assert meta["summary"]["reason"].startswith("rank 0"), meta["summary"]
            for node in nodes:
                wait_for(lambda n=node: not n.processes(), 10, "every process to end")
        finally:
            for node in nodes:
                node.end()
