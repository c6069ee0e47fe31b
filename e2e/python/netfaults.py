"""Hosts as Linux network namespaces on one private bridge, and the network faults between them.

Every host is a namespace ``<prefix>-<name>`` with one veth ``eth0`` whose peer sits on bridge ``br0`` in a
switch namespace ``<prefix>-sw``; the subnet (10.99.0.0/24 by default) exists only inside these namespaces,
so the machine's own network is never touched (no interface, route or rule outside them, ip_forward unchanged).
Processes run inside a host with ``ip netns exec`` (which execs, so the pid is the program's own).

Faults, all applied from inside the namespaces:

- partitions, any direction: nftables ``bridge`` rules in the switch (drop, not reject, so TCP connections
  stay "established" on both ends and only time out);
- random loss on a host's link: an nftables ``numgen`` rule in the switch for packets from and to it;
- everything healed at once by flushing the switch's chain.

Teardown is complete also after a failure or Ctrl-C: ``atexit``, SIGTERM/SIGHUP handlers that turn into
``SystemExit``, and at start a cleanup of stale namespaces with the same prefix (and of the processes left
in them by an earlier run that was killed with SIGKILL).

Needs root and the Debian packages iproute2 and nftables.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
TABLE = "jepsen"
CHAIN = "cut"


def run(argv: list[str], check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def remove_namespace(name: str) -> None:
    """Kills what still runs in `name` (our own stale processes) and deletes it."""
    pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        if pid == str(os.getpid()):  # the harness itself may live in a host's namespace
            continue
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    run(["ip", "netns", "delete", name], check=False)


def clean_stale(prefix: str) -> list[str]:
    """Deletes every namespace `<prefix>-*` left by an earlier run; returns their names."""
    stale = [name for name in namespaces() if name.startswith(prefix + "-")]
    for name in stale:
        remove_namespace(name)
    return stale


def enter(namespace: str) -> None:
    """Moves the calling thread into `namespace` (threads it starts later inherit it). Used once, at start,
    by a harness whose own sockets must live on the private network."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({namespace})")
    finally:
        os.close(fd)


@dataclass
class Host:
    name: str
    namespace: str
    ip: str
    port: str  # its veth end on the bridge

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass
class Network:
    prefix: str = "jn"
    subnet: str = "10.99.0"
    hosts: dict[str, Host] = field(default_factory=dict)
    built: bool = False
    rules: list[str] = field(default_factory=list)  # human-readable, the active faults

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    def build(self, names: dict[str, int]) -> "Network":
        """Creates the switch and one host per name (name → last octet of its address)."""
        stale = clean_stale(self.prefix)
        if stale:
            print(f"netfaults: removed stale namespaces {stale}", flush=True)
        atexit.register(self.teardown)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _exit_on_signal)
        # Ctrl-C also when started in the background of a shell, which starts it with SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.built = True
        sw = self.switch
        run(["ip", "netns", "add", sw])
        run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", sw, "link", "set", "br0", "up"])
        for index, (name, octet) in enumerate(names.items()):
            namespace = f"{self.prefix}-{name}"
            port = f"p{index}"
            run(["ip", "netns", "add", namespace])
            run(["ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace])
            run(["ip", "-n", sw, "link", "set", port, "master", "br0", "up"])
            run(["ip", "-n", namespace, "addr", "add", f"{self.subnet}.{octet}/24", "dev", "eth0"])
            run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
            run(["ip", "-n", namespace, "link", "set", "lo", "up"])
            self.hosts[name] = Host(name, namespace, f"{self.subnet}.{octet}", port)
        self.nft(f"add table bridge {TABLE}")
        self.nft(f"add chain bridge {TABLE} {CHAIN} {{ type filter hook forward priority 0 ; }}")
        return self

    def teardown(self) -> None:
        if not self.built:
            return
        self.built = False
        for host in self.hosts.values():
            remove_namespace(host.namespace)
        remove_namespace(self.switch)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    # faults

    def nft(self, command: str) -> None:
        run(["ip", "netns", "exec", self.switch, "nft", *command.split()])

    def _addresses(self, names: list[str]) -> str:
        return "{ " + ", ".join(self.hosts[n].ip for n in names) + " }"

    def cut_one_way(self, sources: list[str], destinations: list[str]) -> None:
        """Packets from every source to every destination are dropped (the reverse direction still flows)."""
        self.nft(f"add rule bridge {TABLE} {CHAIN} ip saddr {self._addresses(sources)} "
                 f"ip daddr {self._addresses(destinations)} drop")
        self.rules.append(f"{','.join(sources)} -/-> {','.join(destinations)}")

    def cut(self, a: list[str], b: list[str]) -> None:
        """No packet between the two groups, either way."""
        self.cut_one_way(a, b)
        self.cut_one_way(b, a)

    def partition(self, groups: list[list[str]]) -> None:
        for i, group in enumerate(groups):
            for other in groups[i + 1:]:
                self.cut(group, other)

    def loss(self, name: str, percent: int, peers: list[str] | None = None) -> None:
        """Drops `percent` % of the packets from and to host `name` (only those to/from `peers` when given)."""
        ip = self.hosts[name].ip
        others = f" ip daddr {self._addresses(peers)}" if peers else ""
        back = f" ip saddr {self._addresses(peers)}" if peers else ""
        self.nft(f"add rule bridge {TABLE} {CHAIN} ip saddr {ip}{others} numgen random mod 100 < {percent} drop")
        self.nft(f"add rule bridge {TABLE} {CHAIN} ip daddr {ip}{back} numgen random mod 100 < {percent} drop")
        self.rules.append(f"{percent}% loss on {name}" + (f" to/from {','.join(peers)}" if peers else ""))

    def heal(self) -> None:
        self.nft(f"flush chain bridge {TABLE} {CHAIN}")
        self.rules.clear()

    def reachable(self, source: str, destination: str, timeout: float = 1.0) -> bool:
        """One ping from host `source` to host `destination`."""
        argv = self.hosts[source].exec_argv(["ping", "-c", "1", "-W", str(max(1, int(timeout))),
                                             self.hosts[destination].ip])
        return run(argv, check=False, timeout=timeout + 5).returncode == 0


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through finally blocks, then atexit runs the teardown


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
