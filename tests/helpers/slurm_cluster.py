"""A one-node Slurm cluster on localhost for tests: munged, MariaDB, slurmdbd, slurmctld and slurmd
from Debian's packages, each with its own generated configuration, key, sockets and state under one
temporary folder (nothing in /etc is read or changed), stopped by their process ids.

``SLURM_CONF`` in :attr:`LocalSlurm.env` points the client commands (sbatch, squeue, sacct, srun)
at this cluster. Job accounting (slurmdbd on a private MariaDB) is not optional: Snakemake's slurm
executor plugin follows its jobs with ``sacct``, which Slurm 22.05 refuses without it.
The database listens on 127.0.0.1 only, on a free port, with grant tables skipped (a throwaway
instance inside the test's folder).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

#: Debian packages and the programs of them the cluster runs
PACKAGES = {"slurm-wlm": ("slurmctld", "slurmd", "sbatch", "squeue", "sacct", "srun", "sinfo"),
            "slurmdbd": ("slurmdbd",), "munge": ("munged", "mungekey"),
            "mariadb-server": ("mariadbd", "mariadb-install-db")}


def _which(program: str) -> str | None:
    return shutil.which(program) or next((str(p) for p in (Path("/usr/sbin") / program,) if p.exists()), None)


def missing_programs() -> list[str]:
    return [p for programs in PACKAGES.values() for p in programs if _which(p) is None]


def install() -> str | None:
    """apt-get the packages when a program is missing; None when all are there, else why not."""
    if not missing_programs():
        return None
    if shutil.which("apt-get") is None:
        return "slurm-wlm/munge are not installed and there is no apt-get to install them"
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        return "slurm-wlm/munge are not installed and installing needs root (no sudo)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        result = subprocess.run(prefix + cmd, capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0:
            return f"{' '.join(cmd)} failed: {(result.stderr or result.stdout).strip()[-500:]}"
    missing = missing_programs()
    return f"still missing after apt-get: {missing}" if missing else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class LocalSlurm:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.processes: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "USER": os.environ.get("USER", "root")}

    def write_config(self) -> None:
        for sub in ("munge", "state", "spool", "log", "db"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        r = self.root
        self.db_port, self.dbd_port = _free_port(), _free_port()
        dbd = self.root / "slurmdbd.conf"   # read from SLURM_CONF's folder; slurmdbd wants mode 600
        dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.dbd_port}
SlurmUser=root
PidFile={r}/slurmdbd.pid
LogFile={r}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.db_port}
StorageUser=root
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)
        # one node, its CPUs and (all but 1 GB of) its memory; cons_tres hands out CPUs only, so jobs'
        # --mem is checked against RealMemory, not summed
        self.conf.write_text(f"""\
ClusterName=kiln-test
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.dbd_port}
AccountingStoragePass={self.munge_socket}
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
SlurmdTimeout=60
MpiDefault=none
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={max(1000, _memory_mb() - 1000)} State=UNKNOWN
PartitionName=kiln Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")

    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")
        self.processes[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                start_new_session=True)

    def start(self, timeout: float = 60) -> None:
        self.write_config()
        key = self.root / "munge" / "munge.key"
        subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}", "--force"], check=True,
                       capture_output=True)
        key.chmod(0o400)
        # -F: foreground (its pid is the daemon's); --force: run as root and accept /tmp's permissions
        self._start("munged", [_which("munged"), "-F", "--force", f"--key-file={key}",
                               f"--socket={self.munge_socket}", f"--pid-file={self.root}/munge/munged.pid",
                               f"--log-file={self.root}/log/munged.log",
                               f"--seed-file={self.root}/munge/munged.seed"])
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged socket")
        datadir = self.root / "db" / "data"
        subprocess.run([_which("mariadb-install-db"), f"--datadir={datadir}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, env=self.env)
        self._start("mariadbd", [_which("mariadbd"), "--no-defaults", f"--datadir={datadir}", "--user=root",
                                 "--bind-address=127.0.0.1", f"--port={self.db_port}", "--skip-grant-tables",
                                 f"--socket={self.root}/db/mariadb.sock", f"--pid-file={self.root}/db/mariadb.pid",
                                 f"--log-error={self.root}/log/mariadb.log"])
        self._wait(lambda: _port_open(self.db_port), timeout, "MariaDB")
        self._start("slurmdbd", [_which("slurmdbd"), "-D"])
        self._wait(lambda: _port_open(self.dbd_port), timeout, "slurmdbd")
        self._start("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._start("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf)])
        self._wait(self.node_idle, timeout, "the node to become idle")

    def node_idle(self) -> bool:
        result = subprocess.run([_which("sinfo"), "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                                env=self.env)
        return result.returncode == 0 and result.stdout.strip().startswith("idle")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}:\n"
                                       f"{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.logs()}")

    def logs(self, tail: int = 2000) -> str:
        out = []
        for path in sorted((self.root / "log").glob("*")):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    def stop(self) -> None:
        """Stop the daemons this object started (by pid, children first), then wait for them."""
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)

    def __enter__(self) -> "LocalSlurm":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
