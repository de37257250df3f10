"""The grader's sandbox and its batch behaviour, tested from outside:

* what a process inside the bubblewrap sandbox can see and do (as root: never real root outside);
* the grader run by an unprivileged user (the test creates one when it runs as root);
* SIGTERM stops workers and kernels, removes temporary files, keeps the finished rows; ``--resume``;
* a submission stopped by the wall-clock backstop is graded again, alone, before its zero is final.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coursework.grading import bwrap as bw  # noqa: E402
from coursework.grading.kernel import namespaces_available, readonly_paths  # noqa: E402
from coursework.grading.sandbox import Limits, limit_child  # noqa: E402

BWRAP = bw.find_bwrap()[0] if sys.platform.startswith("linux") else None
needs_sandbox = pytest.mark.skipif(BWRAP is None, reason=f"no bubblewrap sandbox here: {bw.find_bwrap()[1]}")
MARK = "cw-sandbox-test-marker"

PROBE = r'''
import ctypes, json, os, socket, sys, time
seen = {}
def attempt(name, fn):
    try:
        fn(); seen[name] = True
    except Exception as e:
        seen[name] = type(e).__name__
def write(path, text="x"):
    with open(path, "w") as f:
        f.write(text)
attempt("write /proc/sys/kernel/hostname", lambda: write("/proc/sys/kernel/hostname", "cw"))
attempt("write /proc/sys/kernel/core_pattern", lambda: write("/proc/sys/kernel/core_pattern", "|/tmp/x"))
attempt("write /dev/kmsg", lambda: write("/dev/kmsg", "cw"))
attempt("write /", lambda: write("/cw-file"))
attempt("write /usr", lambda: write("/usr/cw-file"))
attempt("network", lambda: socket.create_connection(("1.1.1.1", 53), timeout=2))
def fill():
    with open(os.path.expanduser("~/fill"), "wb") as f:
        for _ in range(40):
            f.write(b"\0" * 2**20)
attempt("write 40 MB in the home folder", fill)
status = open("/proc/self/status").read()
info = {
    "seen": seen, "uid": os.getuid(), "home": os.path.expanduser("~"), "cwd": os.getcwd(),
    "dev": sorted(os.listdir("/dev")), "sys": os.path.exists("/sys/fs/cgroup"),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "nonewprivs": [l for l in status.splitlines() if l.startswith(("NoNewPrivs", "CapEff", "CapBnd"))],
    "ipc": os.readlink("/proc/self/ns/ipc"), "uts": os.readlink("/proc/self/ns/uts"), "hostname": socket.gethostname(),
    "below_tmp": open(sys.argv[1]).read() if len(sys.argv) > 1 and os.path.exists(sys.argv[1]) else None,
    "nproc": __import__("resource").getrlimit(__import__("resource").RLIMIT_NPROC)[0],
}
print(json.dumps(info), flush=True)
time.sleep(3)   # outside, the test looks at this process's owner meanwhile
'''


@needs_sandbox
def test_inside_the_sandbox(tmp_path):
    below = Path(tempfile.mkdtemp(prefix="cw-below-tmp-"))       # e.g. a course cloned below /tmp
    stage = None
    try:
        (below / "marker.txt").write_text("visible")
        os.chmod(below, 0o755)
        (below / "marker.txt").chmod(0o644)
        conn = tmp_path / "conn"
        conn.mkdir()
        os.chmod(tmp_path, 0o711)
        bw.prepare_dirs(str(conn))
        stage = bw.new_stage_dir()
        cmd = bw.sandboxed(BWRAP, [*readonly_paths(), str(below)], str(conn),
                           [sys.executable, "-I", "-S", "-c", PROBE, str(below / "marker.txt"), MARK],
                           nproc=64, cpu_s=60, home_mb=16, stage_dir=stage)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=limit_child(Limits()), env={"PATH": os.environ.get("PATH", ""), "HOME": bw.HOME})
        owners = set()
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            for p in psutil.process_iter(["cmdline", "uids"]):
                if MARK in " ".join(p.info["cmdline"] or []) and "-c" in (p.info["cmdline"] or []):
                    owners.add(p.info["uids"].real)
            time.sleep(0.2)
        out, err = proc.communicate(timeout=30)
    finally:
        shutil.rmtree(below, ignore_errors=True)
        if stage:
            shutil.rmtree(stage, ignore_errors=True)
    assert proc.returncode == 0, err
    info = json.loads(out.splitlines()[0])
    assert owners and 0 not in owners, f"outside the sandbox the process belongs to {owners}: never real root"
    if os.geteuid() != 0:
        assert owners == {os.getuid()}
    seen = info["seen"]
    assert all(v is not True for v in seen.values()), seen
    assert info["uid"] == bw.INSIDE_UID and info["home"] == bw.HOME and info["cwd"] == bw.HOME
    assert set(info["dev"]) <= {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd",
                                "stdin", "stdout", "stderr", "core", "mqueue"}, info["dev"]
    assert not {"kmsg", "kvm", "console", "loop-control", "mem"} & set(info["dev"])
    assert not info["sys"], "no /sys (no cgroup files) in the sandbox"
    assert max(info["pids"]) < 10, f"only the sandbox's own processes are visible: {info['pids']}"
    assert "NoNewPrivs:\t1" in info["nonewprivs"] and "CapEff:\t0000000000000000" in info["nonewprivs"]
    assert info["ipc"] != os.readlink("/proc/self/ns/ipc") and info["uts"] != os.readlink("/proc/self/ns/uts")
    assert info["hostname"] == "grader"
    assert info["below_tmp"] == "visible", "read-only paths below /tmp stay visible on top of the private /tmp"
    assert info["nproc"] == 64
    assert seen["write 40 MB in the home folder"] == "OSError", "the 16 MB home folder is a disk quota"


# ------------------------------------------------------------------------------------------ helpers
def a1_notebook(extra_cells=(), correct=True):
    """The A1 solution (graded cells only) with extra code cells after the first one."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_grader import trimmed_a1

    nb = trimmed_a1()
    for i, code in enumerate(extra_cells):
        nb.cells.insert(1 + i, nbformat.v4.new_code_cell(code))
    return nb


def private_tmp() -> Path:
    """A temporary folder of our own for a grader run (TMPDIR), to check that it is left empty."""
    path = Path(tempfile.mkdtemp(prefix="cwtest-"))
    path.chmod(0o711)
    return path


def grade_cmd(subs, out, *args):
    return [sys.executable, "-m", "coursework", "grade", str(subs), "--out", str(out), "--assignment", "a1_transforms", *args]


def rows(out):
    return {r["student"]: r for r in json.loads((Path(out) / "gradebook.json").read_text())}


def marked(mark):
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if mark in " ".join(p.info["cmdline"] or []):
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


# ------------------------------------------------------------------------------------------ stop and resume
def test_sigterm_stops_everything_and_resume_finishes(tmp_path):
    mark = f"cw-sigterm-marker-{os.getpid()}"
    subs, out = tmp_path / "subs", tmp_path / "out"
    (subs / "aa_missing").mkdir(parents=True)
    (subs / "bb_correct").mkdir()
    nbformat.write(a1_notebook(), subs / "bb_correct" / "a1_transforms.ipynb")
    (subs / "cc_sleepy").mkdir()
    sleepy = f"import subprocess, sys, time\nkid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{mark}'])\ntime.sleep(600)"
    nbformat.write(a1_notebook([sleepy]), subs / "cc_sleepy" / "a1_transforms.ipynb")
    tmp = private_tmp()
    proc = subprocess.Popen(grade_cmd(subs, out, "--jobs", "1"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, TMPDIR=str(tmp)))
    deadline = time.monotonic() + 300
    while not marked(mark) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert marked(mark), "the sleepy submission never started"
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, log
    time.sleep(1)
    assert marked(mark) == [], "a kernel or its child survived SIGTERM"
    assert list(tmp.iterdir()) == [], "temporary files were left"
    tmp.rmdir()
    kept = rows(out)
    assert set(kept) == {"aa_missing", "bb_correct"} and kept["bb_correct"]["total"] == 12, log
    # the student fixes the notebook; --resume grades only what is missing
    nbformat.write(a1_notebook(), subs / "cc_sleepy" / "a1_transforms.ipynb")
    again = subprocess.run(grade_cmd(subs, out, "--resume"), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "grading 1 submission(s)" in again.stdout and "2 already in the gradebook" in again.stdout
    final = rows(out)
    assert set(final) == {"aa_missing", "bb_correct", "cc_sleepy"} and final["cc_sleepy"]["total"] == 12


def test_wall_clock_backstop_regrades_alone(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    (subs / "waiter").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import time\ntime.sleep(3)") for _ in range(5)]
    nbformat.write(nb, subs / "waiter" / "a1_transforms.ipynb")
    run = subprocess.run(grade_cmd(subs, out, "--timeout", "2", "--cell-timeout", "1", "--wall-factor", "1",
                                   "--wall-margin", "6"), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    row = rows(out)["waiter"]
    assert row["status"] == "timeout" and row["regraded"], row
    assert "wall-clock backstop" in row["reason"] and "graded again alone" in row["reason"]
    assert "grading it again, alone" in run.stdout


# ------------------------------------------------------------------------------------------ unprivileged user
USER = "gradertest"


def test_grader_as_an_unprivileged_user(tmp_path):
    """As root, create an unprivileged user and grade with it (runuser); elsewhere skip, saying why."""
    if os.geteuid() != 0:
        pytest.skip("runs as root only (it creates the user gradertest); run by an unprivileged user, the whole suite is that case")
    if shutil.which("runuser") is None or shutil.which("useradd") is None:
        pytest.skip("runuser/useradd are not available")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", USER], check=True, capture_output=True)
    probe = subprocess.run(["runuser", "-u", USER, "--", sys.executable, "-c", "import regedu, coursework"],
                           cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if probe.returncode != 0:
        pytest.skip(f"the course's Python is not usable by an unprivileged user on this machine: {probe.stderr.strip()[-200:]}")
    work = Path(tempfile.mkdtemp(prefix="cw-user-"))
    try:
        os.chmod(work, 0o777)
        subs, out = work / "subs", work / "out"
        (subs / "correct").mkdir(parents=True)
        nbformat.write(a1_notebook(), subs / "correct" / "a1_transforms.ipynb")
        escape = (REPO / "tests" / "grader_fixtures" / "hostile" / "root_escapes.py").read_text()
        from test_grader import hostile_notebook  # noqa: F401 - same fixture format

        (subs / "root_escapes").mkdir()
        nbformat.write(hostile_notebook(REPO / "tests" / "grader_fixtures" / "hostile" / "root_escapes.py"),
                       subs / "root_escapes" / "a1_transforms.ipynb")
        assert escape
        subprocess.run(["chmod", "-R", "a+rwX", str(work)], check=True)
        cache = os.environ.get("REGEDU_CACHE") or str(Path.home() / ".cache" / "regedu")
        env = dict(os.environ, PYTHONPATH=str(REPO), HOME=f"/home/{USER}", REGEDU_CACHE=f"/home/{USER}/.cache/regedu")
        Path(f"/home/{USER}/.cache/regedu").mkdir(parents=True, exist_ok=True)
        for f in Path(cache).glob("*.npz"):
            shutil.copyfile(f, f"/home/{USER}/.cache/regedu/{f.name}")
        subprocess.run(["chown", "-R", f"{USER}:{USER}", f"/home/{USER}/.cache"], check=True)
        run = subprocess.run(["runuser", "-u", USER, "--", *grade_cmd(subs, out, "--jobs", "2")], cwd=REPO,
                             capture_output=True, text=True, timeout=900, env=env)
        assert run.returncode == 0, run.stdout + run.stderr
        got = rows(out)
        assert got["correct"]["total"] == 12, got["correct"]
        assert got["root_escapes"]["total"] == 12, got["root_escapes"]["questions"]
        assert "bubblewrap" in got["correct"]["sandbox"] or not namespaces_available()
    finally:
        shutil.rmtree(work, ignore_errors=True)
