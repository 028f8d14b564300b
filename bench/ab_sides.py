"""The two sides of `bench ab` and their processes.

A side is a git revision of the project (its ``bench`` and ``rerankers`` exported from git into the A/B's run
directory, ``RUN/revisions/<commit>/``, and put first on ``PYTHONPATH``: the installed dependencies are shared)
or the working tree this ``bench`` runs from, plus extra cell options and environment variables. Each of its
processes runs bench/fixed_work.py of the driver's tree (the timing) on the side's code (the subject).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.conditions import contention, default_torch_threads, read_counters
from bench.errors import ConfigError
from bench.worker import die_with_parent

FIXED_WORK = Path(__file__).with_name("fixed_work.py")
DRIVER_TREE = Path(__file__).resolve().parents[1]  # the folder holding the bench/ this driver runs
PACKAGES = ("bench", "rerankers")  # what a revision's export holds: the project's code, not its results
# A valgrind process counts instructions of one thread that never spins waiting for work, with a fixed hash seed.
VALGRIND_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONHASHSEED": "0"}
LOG_TAIL = 2000
DUMP_LABEL = "desc: Trigger: Client Request: "  # how callgrind heads a dump made by CALLGRIND_DUMP_STATS_AT


@dataclass
class Side:
    name: str  # "A" or "B"
    revision: str | None  # as given; None: the working tree bench runs from
    args: str = ""  # extra cell options, as given
    env: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # the cell settings its processes get
    commit: str | None = None  # the revision's commit, or the working tree's HEAD
    changes: str | None = None  # working tree: digest of its uncommitted changes to tracked files
    tree: Path = DRIVER_TREE

    def describe(self) -> str:
        if self.revision is None:
            what = "working tree" + (f" at {self.commit[:12]}" if self.commit else "")
            what += " + uncommitted changes" if self.changes else ""
        else:
            what = f"revision {self.revision} ({self.commit[:12]})"
        extra = [self.args] if self.args else []
        extra += [f"{key}={value}" for key, value in sorted(self.env.items())]
        return f"{self.name}: {what}" + (f"; {' '.join(extra)}" if extra else "")

    def identity(self) -> dict[str, Any]:
        """What must not change when an A/B is resumed."""
        return {"revision": self.commit, "changes": self.changes, "args": self.args, "env": self.env}


def parse_env(items: list[str], flag: str) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{flag} expects KEY=VALUE with a variable name as KEY, got {item!r}")
        if key == "PYTHONPATH":
            raise ConfigError(f"{flag}: PYTHONPATH is set by bench ab (the side's code first); use --{flag[2]} REV")
        env[key] = value
    return env


def _git(repo: Path, *args: str, binary: bool = False) -> Any:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=not binary, timeout=120)
    except (OSError, subprocess.SubprocessError) as error:
        raise ConfigError(f"cannot run git in {repo}: {error}") from None
    if out.returncode != 0:
        message = out.stderr.decode(errors="replace") if binary else out.stderr
        raise ConfigError(f"git {' '.join(args)} in {repo}: {message.strip().splitlines()[-1] if message else ''}")
    return out.stdout


def resolve(side: Side, repo: Path) -> None:
    """The side's commit (and for the working tree, a digest of its uncommitted changes, where it is a git
    checkout). A revision that git does not know is a ConfigError."""
    if side.revision is None:
        try:
            side.commit = _git(DRIVER_TREE, "rev-parse", "HEAD").strip()
            diff = _git(DRIVER_TREE, "diff", "HEAD", "--", *PACKAGES, binary=True)
        except ConfigError:  # installed from a package, not a checkout: nothing to pin
            return
        side.changes = hashlib.sha256(diff).hexdigest()[:16] if diff else None
        return
    try:
        side.commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{side.revision}^{{commit}}").strip()
    except ConfigError:
        raise ConfigError(f"--{side.name.lower()} {side.revision}: not a revision of the repository {repo}") from None


def export(side: Side, run_dir: Path, repo: Path) -> None:
    """The side's packages at its revision, under RUN/revisions/<commit>/ (exported once, then reused)."""
    if side.revision is None:
        return
    tree = run_dir / "revisions" / side.commit
    if not (tree / "bench" / "__init__.py").is_file():
        archive = _git(repo, "archive", "--format=tar", side.commit, *PACKAGES, binary=True)
        tree.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{side.commit[:12]}-", dir=tree.parent))
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(partial, filter="data")
        shutil.rmtree(tree, ignore_errors=True)
        partial.rename(tree)
    side.tree = tree


@dataclass
class Outcome:
    """One finished process of a side: its result (``status`` ok or failed) and the conditions it ran in."""

    result: dict[str, Any]
    conditions: dict[str, Any]
    started_at: str
    wall_seconds: float


def run_process(side: Side, job: dict[str, Any], timeout: float | None, valgrind_out: Path | None = None) -> Outcome:
    """One fresh process of ``side`` doing ``job`` (bench/fixed_work.py), alone on the machine: never two at once.

    The conditions are read around it here (/proc/stat and the process's rusage, bench/conditions.py). With
    ``valgrind_out`` it runs under callgrind, which writes its counts there.
    """
    env = {**os.environ, **side.env}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(side.tree), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-P", str(FIXED_WORK)]
    if valgrind_out is not None:
        env.update(VALGRIND_ENV)
        out = f"--callgrind-out-file={valgrind_out / 'callgrind.out.%p'}"
        command = ["valgrind", "-q", "--tool=callgrind", "--instr-atstart=no", out, *command]
    started_at, start = datetime.now(UTC).isoformat(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as scratch:
        result_path, log_path = Path(scratch) / "result.json", Path(scratch) / "log"
        before = read_counters()
        with open(log_path, "w+b") as log:
            status = _wait(command + [str(result_path)], job, env, log, timeout)
            log.seek(0)
            tail = log.read().decode(errors="replace")[-LOG_TAIL:].strip()
        after = read_counters()
        result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if result.get("status") != "ok":
        error = result.get("error") or status or "the process wrote no result"
        result = {**result, "status": "timeout" if status and "timeout" in status else "failed", "error": error}
        result["log_tail"] = tail
    threads = result.get("torch_threads") or job["settings"].get("threads") or default_torch_threads()
    return Outcome(result, contention(before, after, threads), started_at, time.monotonic() - start)


def _wait(command: list[str], job: dict[str, Any], env: dict[str, str], log: Any, timeout: float | None) -> str | None:
    """Run the process to its end; None when it exited 0, else what ended it. An interrupt kills it first."""
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent
    )
    try:
        process.communicate(json.dumps(job).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return f"timeout: the process exceeded {timeout:g} s"
    except BaseException:
        process.kill()
        process.wait()
        raise
    code = process.returncode
    return None if code == 0 else f"killed by signal {-code}" if code < 0 else f"exited with code {code}"


def callgrind_counts(out_dir: Path) -> dict[str, int]:
    """Instructions per counted region ({"train": n, "latency": n}) from callgrind's dumps in ``out_dir``."""
    counts = {}
    for path in sorted(out_dir.glob("callgrind.out.*")):
        region, total = None, None
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(DUMP_LABEL):
                region = line.removeprefix(DUMP_LABEL).strip()
            elif line.startswith("totals:"):
                total = int(line.split()[1])
        if region is not None and total is not None:
            counts[region] = total
    return counts
