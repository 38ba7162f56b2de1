"""The test suite builds its simulators quickly (Verilator's C++ at -O1, in build folders of
their own: ``sim/runner.py``, ``QUICK_BUILDS``): the tests check behaviour, not speed, and
about half of a build's compile time goes. Commands the tests start inherit it."""

import os

from tessera.sim.runner import QUICK_BUILDS

os.environ.setdefault(QUICK_BUILDS, "1")
