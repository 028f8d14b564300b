"""Imported first by the process executor's fork server (``PRELOAD``, bench/executor.py), and meant for it alone:
the kernel kills the server the moment the driver dies (kill -9 included), and each cell process it forked dies with
it (their own parent-death signal, bench/worker.py). Left to itself the server notices the driver's death only when
next scheduled and then runs Python's teardown: 10-30 s on a loaded machine, with the cell still computing beside a
resumed run."""

import sys

from bench.parent_death import die_with_parent

# The server runs `python -c "from multiprocessing.forkserver import main; ..."`; anywhere else this does nothing.
if sys.argv == ["-c"] and "multiprocessing.forkserver" in sys.modules:
    die_with_parent()
