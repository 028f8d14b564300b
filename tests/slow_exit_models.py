"""A plugin whose import leaves 60 s of work for the interpreter's exit, as slow teardown of loaded libraries does on
a busy machine; it registers no model (tests/test_hostile_input.py)."""

import atexit
import time

atexit.register(time.sleep, 60)
