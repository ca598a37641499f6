"""Repository-wide pytest set-up, the package's doctests included (pyproject's
testpaths holds ``flowtracker`` and its addopts ``--doctest-modules``).

Spans opened outside any explicit tracker go to the default tracker, whose
exporters come from FLOWTRACKER_EXPORTERS; "none" keeps doctests and tests
from printing FLOW_LOG lines into each other's captured output. Tests of the
default console behaviour run in subprocesses with their own environment.
"""

import os

os.environ["FLOWTRACKER_EXPORTERS"] = "none"
