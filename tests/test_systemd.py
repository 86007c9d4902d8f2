"""systemd/: the unit, the sysusers.d and tmpfiles.d snippets, and what analysts can read.

- the unit declares the service contract (Type=notify, watchdog, restart policy, fixed user,
  state/config directories, credentials, sandbox); `systemd-analyze verify` says nothing
  and `systemd-analyze security` scores it at most 1.5;
- the snippets, applied by systemd-sysusers/systemd-tmpfiles into a scratch root, create
  the users, groups, directories, owners and modes the unit relies on;
- the files syncd creates under the unit's UMask= and directory scheme can be read by a
  member of syncd-analysts (with the sqlite3 shell, else a system python3) while syncd
  has the store open and while it writes; by nobody else; and never written. Tests run
  as root in a container without systemd as PID 1, so the service's umask, group,
  no_new_privs and MemoryDenyWriteExecute are applied by a small launcher, and the
  analyst and the stranger are throwaway numeric uids/gids (no account is created);
- an analyst can read while `syncd run` waits between jobs (the daemon keeps one store
  connection open, so SQLite keeps the -wal and -shm a read-only reader needs).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.config import DeliveryConfig
from syncd.sample import rows
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from tests.helpers import World, esputnik_table

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "syncd.service"
SYSUSERS = SYSTEMD / "syncd.sysusers.conf"
TMPFILES = SYSTEMD / "syncd.tmpfiles.conf"

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
MAX_EXPOSURE = 1.5


# --- the unit as text -------------------------------------------------------------------
def settings(path: Path) -> dict[str, list[str]]:
    """`Section.Key` → every value assigned to it, in order."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def one(key: str) -> str:
    values = settings(UNIT).get(key, [])
    assert len(values) == 1, f"{key}: expected one value, found {values}"
    return values[0]


def seconds(span: str) -> float:
    """A systemd time span as written in the unit: `90s`, `5min`, `2h`, `120`."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)\s*(s|sec|min|m|h)?", span)
    assert match, f"unsupported time span {span!r}"
    return int(match[1]) * units[match[2] or ""]


def tmpfiles_lines() -> dict[str, tuple[str, str, str, str]]:
    """path → (type, mode, user, group) from the tmpfiles.d snippet."""
    out = {}
    for raw in TMPFILES.read_text(encoding="utf-8").splitlines():
        fields = raw.split()
        if fields and not fields[0].startswith("#"):
            out[fields[1]] = (fields[0], fields[2], fields[3], fields[4])
    return out


CONTRACT = {
    "Service.Type": "notify",
    "Service.NotifyAccess": "main",
    "Service.Restart": "on-failure",
    "Service.User": "syncd",
    "Service.Group": "syncd-analysts",
    "Service.SupplementaryGroups": "syncd",
    "Service.UMask": "0027",
    "Service.StateDirectory": "syncd",
    "Service.StateDirectoryMode": "2750",
    "Service.ConfigurationDirectory": "syncd",
    "Service.ConfigurationDirectoryMode": "0750",
    "Service.NoNewPrivileges": "yes",
    "Service.CapabilityBoundingSet": "",
    "Service.PrivateUsers": "yes",
    "Service.PrivateTmp": "yes",
    "Service.PrivateDevices": "yes",
    "Service.DevicePolicy": "closed",
    "Service.ProtectSystem": "strict",
    "Service.ProtectHome": "yes",
    "Service.ProtectKernelTunables": "yes",
    "Service.ProtectKernelModules": "yes",
    "Service.ProtectKernelLogs": "yes",
    "Service.ProtectControlGroups": "yes",
    "Service.ProtectClock": "yes",
    "Service.ProtectHostname": "yes",
    "Service.ProtectProc": "invisible",
    "Service.ProcSubset": "pid",
    "Service.KeyringMode": "private",
    "Service.LockPersonality": "yes",
    "Service.MemoryDenyWriteExecute": "yes",
    "Service.RestrictRealtime": "yes",
    "Service.RestrictSUIDSGID": "yes",
    "Service.RestrictNamespaces": "yes",
    "Service.RemoveIPC": "yes",
    "Service.RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "Service.SystemCallArchitectures": "native",
    "Install.WantedBy": "multi-user.target",
}


@pytest.mark.parametrize(("key", "value"), CONTRACT.items(), ids=list(CONTRACT))
def test_the_unit_declares(key: str, value: str) -> None:
    assert one(key) == value


def test_the_unit_runs_the_daemon_and_gives_it_time() -> None:
    unit = settings(UNIT)
    argv = shlex.split(one("Service.ExecStart"))
    assert argv[0].startswith("/") and argv[-1] == "run"
    assert argv[argv.index("--config") + 1] == "/etc/syncd/syncd.toml"  # ConfigurationDirectory
    assert one("Service.ExecReload").endswith("kill -HUP $MAINPID")  # the daemon re-reads config
    assert "DynamicUser" not in str(unit)  # analysts need a stable group
    assert unit["Service.SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    # the daemon pings at half WatchdogSec; a stop lets the request in flight finish
    assert seconds(one("Service.WatchdogSec")) >= 30
    assert seconds(one("Service.RestartSec")) > 0
    dlv = DeliveryConfig()
    assert seconds(one("Service.TimeoutStopSec")) >= 2 * (dlv.connect_timeout + dlv.read_timeout)
    assert "2" in one("Service.RestartPreventExitStatus").split()  # bad config: do not loop


def test_the_unit_and_the_snippets_agree() -> None:
    lines = tmpfiles_lines()
    # /var/lib/syncd: same owner and mode whether tmpfiles or StateDirectory= made it
    assert lines["/var/lib/syncd"] == (
        "d",
        one("Service.StateDirectoryMode"),
        one("Service.User"),
        one("Service.Group"),
    )
    # /etc/syncd: readable through the service's supplementary group only
    assert lines["/etc/syncd"] == (
        "d",
        one("Service.ConfigurationDirectoryMode"),
        "root",
        one("Service.SupplementaryGroups"),
    )
    # secrets: loaded by PID 1 from a root-only directory
    cred_id, _, cred_dir = one("Service.LoadCredential").partition(":")
    assert cred_id and lines[cred_dir] == ("d", "0700", "root", "root")
    sysusers = [line.split()[:2] for line in SYSUSERS.read_text().splitlines() if line[:1] in "ug"]
    assert ["u", "syncd"] in sysusers  # the user and its group of the same name
    assert ["g", "syncd-analysts"] in sysusers


# --- systemd-analyze --------------------------------------------------------------------
def runnable_copy(folder: Path) -> tuple[Path, list[str]]:
    """The unit with every Exec*= program that is not installed here replaced by `true`
    (verify checks that they exist); returns the copy and the programs replaced."""
    text = UNIT.read_text(encoding="utf-8")
    missing = []
    for key, values in settings(UNIT).items():
        if key.startswith("Service.Exec"):
            for value in values:
                program = shlex.split(value)[0].lstrip("-@:+!")
                if not os.access(program, os.X_OK):
                    missing.append(program)
    true = shutil.which("true")
    assert true
    for program in missing:
        text = text.replace(program, true)
    copy = folder / UNIT.name
    copy.write_text(text, encoding="utf-8")
    return copy, missing


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE
    return subprocess.run(
        [ANALYZE, "--no-pager", *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_analyze
def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    copy, missing = runnable_copy(tmp_path)
    result = analyze("verify", "--man=no", "--generators=no", str(copy))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    # the real unit: nothing but "not installed here" about the programs that were replaced
    result = analyze("verify", "--man=no", "--generators=no", str(UNIT))
    said = result.stderr.splitlines()
    for program in missing:
        line = f"{UNIT.name}: Command {program} is not executable: No such file or directory"
        assert line in said, result.stderr
        said.remove(line)
    assert said == [] and result.stdout == "", result.stderr


@needs_analyze
def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    copy, _missing = runnable_copy(tmp_path)
    result = analyze("security", "--offline=yes", str(copy))
    assert result.stderr == ""
    match = re.search(r"Overall exposure level for syncd\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match[1]) <= MAX_EXPOSURE, result.stdout


# --- sysusers.d and tmpfiles.d, applied for real into a scratch root ----------------------
@pytest.mark.skipif(
    not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles")),
    reason="systemd-sysusers/systemd-tmpfiles are not installed",
)
@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles needs root to chown")
def test_the_snippets_create_users_groups_and_directories(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for tool, args in (
        ("systemd-sysusers", [str(SYSUSERS)]),
        ("systemd-tmpfiles", ["--create", str(TMPFILES)]),
    ):
        done = subprocess.run(
            [tool, f"--root={root}", *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    passwd = {
        f[0]: f for f in (ln.split(":") for ln in (root / "etc/passwd").read_text().splitlines())
    }
    group = {
        f[0]: f for f in (ln.split(":") for ln in (root / "etc/group").read_text().splitlines())
    }
    user = passwd["syncd"]
    uid, gid = int(user[2]), int(user[3])
    assert 0 < uid < 1000 and gid == int(group["syncd"][2])  # a system user with its group
    assert user[6].strip().endswith("nologin")
    analysts = int(group["syncd-analysts"][2])

    def owner_mode(path: str) -> tuple[int, int, int]:
        st = (root / path.lstrip("/")).stat()
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    assert owner_mode("/etc/syncd") == (0, gid, 0o750)
    assert owner_mode("/etc/syncd/credentials") == (0, 0, 0o700)
    assert owner_mode("/var/lib/syncd") == (uid, analysts, 0o2750)


# --- what an analyst can read -------------------------------------------------------------
# The service's view, applied before exec: UMask=0027, NoNewPrivileges=yes and, where the
# kernel has PR_SET_MDWE (6.3+), the same W^X rule as MemoryDenyWriteExecute=yes.
LAUNCH = """
import ctypes, errno, os, sys
os.umask(0o027)
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0            # PR_SET_NO_NEW_PRIVS
if libc.prctl(65, 1, 0, 0, 0) != 0:               # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    assert ctypes.get_errno() == errno.EINVAL     # a kernel before 6.3: no W^X to apply
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""

HOLD = """
import sys
from pathlib import Path
from syncd.state import Store
store = Store.open(Path(sys.argv[1]))
print(store.scalar("SELECT count(*) FROM contacts"), flush=True)
sys.stdin.read()
store.close()
"""


def free_ids(count: int, taken: set[int], start: int = 61000) -> list[int]:
    ids: list[int] = []
    n = start
    while len(ids) < count:
        if n not in taken:
            ids.append(n)
        n += 1
    return ids


class Ids:
    """Throwaway numeric identities: the service's user, the analysts' group, an analyst
    (own primary group, member of the analysts' group) and a stranger."""

    def __init__(self) -> None:
        taken = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
        taken |= {p.pw_gid for p in pwd.getpwall()}
        self.service, self.analysts, self.analyst, self.analyst_group, self.stranger = free_ids(
            5, taken
        )


class Reader:
    """An analyst's tool, run as another user: the sqlite3 shell, else a system python3."""

    def __init__(self, argv: list[str], kind: str) -> None:
        self.argv, self.kind = argv, kind

    def query(self, uid: int, gid: int, groups: list[int], uri: str, sql: str) -> tuple[int, str]:
        if self.kind == "sqlite3":
            argv = [*self.argv, "-batch", "-bail", uri, sql]
        else:
            code = (
                "import sqlite3, sys\n"
                "c = sqlite3.connect(sys.argv[1], uri=True, isolation_level=None)\n"
                "print(c.execute(sys.argv[2]).fetchone()[0])\n"
            )
            argv = [*self.argv, "-c", code, uri, sql]
        done = subprocess.run(
            argv,
            user=uid,
            group=gid,
            extra_groups=groups,
            umask=0o077,
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.returncode, (done.stdout + done.stderr).strip()


def find_reader(ids: Ids) -> Reader | None:
    candidates: list[tuple[list[str], str]] = []
    if shell := shutil.which("sqlite3"):
        candidates.append(([shell], "sqlite3"))
    candidates += [([p], "python") for p in ("/usr/bin/python3", "/usr/local/bin/python3")]
    for argv, kind in candidates:
        reader = Reader(argv, kind)
        try:
            code, _ = reader.query(ids.stranger, ids.stranger, [], ":memory:", "SELECT 1")
        except (OSError, subprocess.SubprocessError):
            continue
        if code == 0:
            return reader
    return None


class Install:
    """A store directory laid out as the unit does it, and syncd run the way systemd runs it."""

    def __init__(self, tmp_path: Path, url: str, ids: Ids, reader: Reader) -> None:
        self.ids, self.reader = ids, reader
        # outside pytest's tmp_path (0700 root): other users must be able to traverse it
        self.top = Path(tempfile.mkdtemp(prefix="syncd-systemd-"))
        self.top.chmod(0o711)
        self.state = self.top / "state"  # /var/lib/syncd: syncd:syncd-analysts 2750
        self.state.mkdir()
        os.chown(self.state, ids.service, ids.analysts)
        self.state.chmod(0o2750)
        self.db = self.state / "syncd.db"
        self.world = World(tmp_path, {"esputnik": esputnik_table(url)})
        config = tmp_path / "syncd.toml"
        text = config.read_text().replace('path = "syncd.db"', f'path = "{self.db}"')
        text = text.replace(
            "[store]", '[schedule]\nreconcile = "0 3 * * *"\npull = "0 4 * * *"\n[store]'
        )
        config.write_text(text)
        self.config = config
        self.world.write(list(rows(30)))
        self.env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}

    def close(self) -> None:
        shutil.rmtree(self.top, ignore_errors=True)

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        """Python with the service's umask, group, no_new_privs and W^X (root keeps its uid:
        the venv's interpreter may live where other users cannot run it)."""
        kw.setdefault("env", self.env)
        return subprocess.Popen(
            [sys.executable, "-c", LAUNCH, *args],
            group=self.ids.analysts,
            extra_groups=[],
            text=True,
            **kw,
        )

    def syncd(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        return self.popen("-m", "syncd.cli", "--config", str(self.config), *args, **kw)

    def analyst(self, uri: str, sql: str = "SELECT count(*) FROM contacts") -> tuple[int, str]:
        ids = self.ids
        return self.reader.query(ids.analyst, ids.analyst_group, [ids.analysts], uri, sql)

    def stranger(self, uri: str) -> tuple[int, str]:
        ids = self.ids
        return self.reader.query(
            ids.stranger, ids.stranger, [], uri, "SELECT count(*) FROM contacts"
        )

    def modes(self) -> dict[str, tuple[int, int]]:
        return {
            p.name: (stat.S_IMODE(p.stat().st_mode), p.stat().st_gid) for p in self.state.iterdir()
        }


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Install]:
    if os.geteuid() != 0:
        pytest.skip("acting as an analyst and a stranger needs root (setuid/setgid)")
    ids = Ids()
    reader = find_reader(ids)
    if reader is None:
        pytest.skip("no sqlite3 shell or system python3 that another user can run")
    with Server(ESputnikSim()) as server:
        inst = Install(tmp_path, server.url, ids, reader)
        try:
            yield inst
        finally:
            inst.close()


def test_analysts_read_the_store_while_syncd_writes_and_nobody_else_can(install: Install) -> None:
    sync = install.syncd("sync", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = sync.communicate(timeout=60)
    assert sync.returncode == 0, out + err
    ro = f"file:{install.db}?mode=ro"
    group = install.ids.analysts
    # 0640 and the analysts' group: the store and the lock file
    modes = install.modes()
    assert {"syncd.db", "syncd.db.lock"} <= set(modes)
    assert set(modes.values()) == {(0o640, group)}, modes

    # a syncd process holds the store open, as the daemon does: -wal and -shm exist
    holder = install.popen(
        "-c", HOLD, str(install.db), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout
        contacts = int(holder.stdout.readline())
        assert contacts == 30
        modes = install.modes()
        assert {"syncd.db", "syncd.db-wal", "syncd.db-shm", "syncd.db.lock"} <= set(modes)
        assert set(modes.values()) == {(0o640, group)}, modes
        # the analyst reads, with the shared-memory index open read-only
        assert install.analyst(ro) == (0, str(contacts))
        assert install.analyst(str(install.db)) == (0, str(contacts))
        # while syncd writes: every read succeeds and sees a committed state
        install.world.write(list(rows(35)))
        seen = []
        with install.syncd("sync", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as again:
            while again.poll() is None:
                seen.append(install.analyst(ro))
            _out, err = again.communicate(timeout=60)
        assert again.returncode == 0, err
        assert seen and all(code == 0 and 30 <= int(n) <= 35 for code, n in seen), seen
        assert install.analyst(ro) == (0, "35")
        # but never writes
        code, said = install.analyst(str(install.db), "DELETE FROM contacts")
        assert code != 0 and "readonly" in said, said
        # and someone outside the group cannot even open it
        code, said = install.stranger(ro)
        assert code != 0 and "unable to open" in said, said
    finally:
        _out, _err = holder.communicate(timeout=30)  # closes its stdin: it closes the store
        assert holder.returncode == 0
    # nothing holds it (the service is stopped): immutable=1 reads it without -shm
    assert install.analyst(f"file:{install.db}?immutable=1") == (0, "35")
    conn = sqlite3.connect(install.db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)

    def close(self) -> None:
        self.sock.close()

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in self.sock.recv(4096).decode():
                    return True
            except TimeoutError:
                pass
        return False


def test_analysts_read_the_store_while_the_daemon_waits_for_its_next_job(
    install: Install, tmp_path: Path
) -> None:
    sync = install.syncd("sync", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = sync.communicate(timeout=60)
    assert sync.returncode == 0, out + err
    notify = NotifySocket(tmp_path / "notify.sock")
    log = (tmp_path / "daemon.log").open("w")
    env = {**install.env, "NOTIFY_SOCKET": str(notify.path), "SYNCD_LOG_LEVEL": "INFO"}
    daemon = install.syncd("run", env=env, stdout=log, stderr=log)
    try:
        assert notify.wait_for("READY=1", 20), (tmp_path / "daemon.log").read_text()
        assert install.analyst(f"file:{install.db}?mode=ro") == (0, "30")
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            assert daemon.wait(timeout=10) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
            log.close()
            notify.close()
