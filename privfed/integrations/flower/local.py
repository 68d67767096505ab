"""A Flower deployment on this machine: one SuperLink and N SuperNodes on 127.0.0.1.

The real ``flower-superlink`` and ``flower-supernode`` processes, talking over loopback
HTTP, exactly as on separate machines (without TLS). For trying the deployment engine, for
tests and for benchmarks; on real machines start the processes as the README's "Running
across machines" shows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["LocalDeployment", "flower_executable"]


def flower_executable(name: str) -> str:
    """The path of Flower's command ``name`` (beside this Python, else on the PATH).

    Raises
    ------
    FileNotFoundError
        When Flower is not installed (``pip install 'privfed[flower]'``).
    """
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"Flower's {name!r} command was not found; install it with "
            "pip install 'privfed[flower]'"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalDeployment:
    """Start a SuperLink and ``num_nodes`` SuperNodes; stop them all on exit.

    SuperNode ``i`` runs with ``--node-config partition-id=i``. Every process gets its own
    process group, so stopping one also stops the ClientApp processes it started. Use as a
    context manager; the processes are stopped on exit whatever happened inside.

    Parameters
    ----------
    num_nodes : int
        Number of SuperNodes (clients of the federation).
    workdir : path, optional
        Where logs and Flower's home (installed apps) go; default: a temporary directory,
        removed on exit.
    node_config : Mapping[int, Mapping[str, str]], optional
        Extra string-valued node-config entries per SuperNode index (e.g. ``identity-key``
        and ``pinned-keys`` paths).

    Attributes
    ----------
    address : str
        ``127.0.0.1:<port>`` of the SuperLink (Fleet and Control APIs).
    flwr_home : Path
        The ``FLWR_HOME`` of every process (and of ``flwr run`` against this deployment).
    """

    def __init__(
        self,
        num_nodes: int,
        workdir: str | Path | None = None,
        node_config: Mapping[int, Mapping[str, str]] | None = None,
    ) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        self.num_nodes = num_nodes
        self.node_config = dict(node_config or {})
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(
            prefix="privfed-flower-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)
        self.flwr_home = self.workdir / "flwr-home"
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.superlink: subprocess.Popen | None = None
        self.nodes: list[subprocess.Popen | None] = []
        self._logs: list = []

    def env(self) -> dict[str, str]:
        """The environment of the deployment's processes: their own ``FLWR_HOME``, and
        Flower's commands on the PATH (the SuperLink and SuperNodes start helpers by name)."""
        bin_dir = str(Path(flower_executable("flower-superlink")).parent)
        path = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
        return {**os.environ, "FLWR_HOME": str(self.flwr_home), "PATH": path}

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed by stop()
        self._logs.append(log)
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                cwd=self.workdir, start_new_session=True)

    def start(self, timeout: float = 60.0) -> LocalDeployment:
        """Start the SuperLink, wait until it accepts connections, then the SuperNodes.

        Raises
        ------
        RuntimeError
            When the SuperLink exits or does not listen within ``timeout`` seconds.
        """
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.superlink = self._start("superlink", [
            flower_executable("flower-superlink"), "--insecure", "--port", str(self.port),
            "--database", str(self.workdir / "state.db"),
        ])
        self._wait_for_superlink(timeout)
        for i in range(self.num_nodes):
            extra = "".join(f' {key}="{value}"'
                            for key, value in self.node_config.get(i, {}).items())
            self.nodes.append(self._start(f"supernode-{i}", [
                flower_executable("flower-supernode"), "--insecure",
                "--superlink", self.address, "--port", str(_free_port()),
                "--node-config", f"partition-id={i} num-partitions={self.num_nodes}{extra}",
            ]))
        return self

    def _wait_for_superlink(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.superlink.poll() is not None:
                break
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(
            f"the SuperLink did not start listening on {self.address}; its log:\n"
            + self.log("superlink")[-2000:]
        )

    def log(self, name: str) -> str:
        """The output so far of process ``name`` ("superlink" or "supernode-<i>")."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill_node(self, index: int) -> None:
        """SIGKILL SuperNode ``index`` and every process it started (a crashed machine)."""
        process = self.nodes[index]
        if process is not None:
            _signal_group(process, signal.SIGKILL)
            process.wait()
            self.nodes[index] = None

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after 10 s); remove a temporary workdir."""
        running = [p for p in [*self.nodes, self.superlink] if p is not None]
        for process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            _signal_group(process, signal.SIGKILL)  # leftover ClientApp/ServerApp children
        _kill_detached(str(self.flwr_home))
        self.nodes, self.superlink = [], None
        for log in self._logs:
            log.close()
        self._logs = []
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalDeployment:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _kill_detached(flwr_home: str, timeout: float = 10.0) -> None:
    """SIGKILL the processes that run with ``FLWR_HOME=flwr_home`` (Linux ``/proc``) until
    none is left: the SuperLink starts its executor in a session of its own, outside the
    groups already killed, and that executor may be starting a ServerApp as it dies."""
    marker = f"FLWR_HOME={flwr_home}".encode() + b"\0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = False
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                pid = int(entry.name)
                if pid != os.getpid() and marker in (entry / "environ").read_bytes():
                    os.kill(pid, signal.SIGKILL)
                    found = True
            except (OSError, ValueError):
                continue
        if not found:
            return
        time.sleep(0.1)


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
