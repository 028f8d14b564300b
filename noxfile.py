"""nox sessions. CI runs lint, tests and smoke (the defaults; under CI, CI set, in the current environment). The
others are run by hand: timing, stability, benchmarks and ab_calibration on a quiet machine (their figures are
timings), mutants whenever the modules it tests change (docs/testing.md says which is which and why)."""

import os

import nox

nox.options.sessions = ["lint", "tests", "smoke"]
nox.options.reuse_existing_virtualenvs = True
if os.environ.get("CI"):
    nox.options.default_venv_backend = "none"


def install(session: nox.Session, *tools: str) -> None:
    """The project with its test extra, and ``tools`` (what one session alone needs); nothing under CI=true, which
    runs in an environment made beforehand."""
    if session.venv_backend == "none":
        return
    # The CPU wheel first, so the project's `torch>=2.3` does not pull a CUDA build.
    session.install("torch==2.13.0")
    session.install("-e", ".[test]")
    if tools:
        session.install(*tools)


@nox.session
def tests(session: nox.Session) -> None:
    install(session)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    install(session)
    session.run("python", "-m", "ruff", "check", ".")


@nox.session
def smoke(session: nox.Session) -> None:
    install(session)
    session.run("bench", "run", "--models", "all", "--profile", "smoke", "--out", session.create_tmp())


@nox.session
def benchmarks(session: nox.Session) -> None:
    """The speed suite (pytest-benchmark); writes results/reference/benchmarks.{json,md}."""
    install(session)
    out = "results/reference/benchmarks.json"
    session.run("python", "-m", "pytest", "benchmarks", "-p", "no:cacheprovider", f"--benchmark-json={out}")
    # The summary is written whole either way; it exits 1 (failing the session) when a target is missed.
    with open("results/reference/benchmarks.md", "w") as handle:
        session.run("python", "benchmarks/summarize.py", out, stdout=handle)


@nox.session
def timing(session: nox.Session) -> None:
    """The timing-dependent checks (pytest -m timing): bench compare on real A/A and slowed-model runs at smoke
    size. Meant for a quiet machine."""
    install(session)
    session.run("python", "-m", "pytest", "-m", "timing", *session.posargs)


@nox.session
def stability(session: nox.Session) -> None:
    """Run-to-run CV of the speed figures (default profile, transformer + mlp, 5 runs) and the machine's
    noise floor; writes results/reference/stability.md. Meant for a quiet machine."""
    install(session)
    session.run("python", "benchmarks/stability.py", *session.posargs)


@nox.session
def ab_calibration(session: nox.Session) -> None:
    """bench ab on 10 A/As and 10 A/Bs with a model made ~20% slower (smoke size), then one of each at the default
    size; writes results/reference/ab.md. Meant for a quiet machine (about 1.5 h on the 2-core reference VM)."""
    install(session)
    session.run("python", "benchmarks/ab_calibration.py", "--out", "results/reference", *session.posargs)


@nox.session
def browser(session: nox.Session) -> None:
    """Opens report.html of the reference runs in headless Chromium (apt-get install -y chromium) and checks that
    the headline table and every plot are shown; screenshots in results/browser/. Not a default session."""
    install(session)
    session.run("python", "benchmarks/browser_check.py", *session.posargs)


MUTATION_TOOL = "mutmut==3.8.1"  # the tool only: not a dependency of the project


@nox.session
def mutants(session: nox.Session) -> None:
    """Mutation testing (mutmut, one worker) of the modules every verdict rests on, against the unit tests that cover
    them (pyproject.toml [tool.mutmut]); fails when a module scores below 90% with the equivalent mutants of
    docs/mutants.md left out. Resumes from mutants/; `nox -s mutants -- --fresh` starts over (docs/mutants.md: the
    scores and how long a fresh run takes)."""
    install(session, MUTATION_TOOL)
    session.run("python", "benchmarks/mutation_score.py", *session.posargs)
