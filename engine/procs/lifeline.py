"""Processes that die with their parent, and the network interface toward a master address.

`die_with_parent(sig)` asks Linux to send `sig` to this process when its parent exits
(prctl PR_SET_PDEATHSIG, through ctypes); elsewhere a daemon thread polls the parent's pid.
The chain of a distributed run is launcher -> torchrun agent -> ranks: the agent gets
SIGTERM when the launcher dies (torchrun then ends its ranks and the agent removes the job
folder), each rank gets SIGKILL when the agent dies.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import socket
import sys
import threading

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Get `sig` when the parent process exits. `parent`: the pid the parent should have
    (from the environment); if it is gone already (we were re-parented), `sig` comes now."""
    expected = parent if parent is not None else os.getppid()
    done = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            done = libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
        except (OSError, AttributeError):
            done = False
    if not done:
        threading.Thread(target=_watch_parent, args=(expected, sig), daemon=True).start()
    if os.getppid() != expected:
        os.kill(os.getpid(), sig)


def _watch_parent(parent: int, sig: int) -> None:
    import time

    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), sig)


def env_pid(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def interface_for(master_addr: str) -> str | None:
    """The name of the network interface this machine reaches `master_addr` through: the one
    holding the source address the kernel picks for it (loopback for 127.0.0.1, the
    interface holding the address on the master itself); None if it cannot be told."""
    import psutil

    try:
        infos = socket.getaddrinfo(master_addr, None, proto=socket.IPPROTO_UDP)
    except OSError:
        return None
    for family, _, _, _, sockaddr in infos:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((sockaddr[0], 9))  # UDP: no packet is sent, the route is chosen
                local = ipaddress.ip_address(s.getsockname()[0].split("%")[0])
        except (OSError, ValueError):
            continue
        for name, addrs in psutil.net_if_addrs().items():
            for a in addrs:
                try:
                    if ipaddress.ip_address(a.address.split("%")[0]) == local:
                        return name
                except ValueError:
                    continue
    return None
