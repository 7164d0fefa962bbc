"""flowtrace in CI: replay a scenario, record per-route stage samples, compare runs.

``scenario`` reads the scenario file, ``replay`` runs requests through
FlowTrace in-process (or against a server URL), ``results`` is the versioned
result file, ``stats`` the Hodges–Lehmann shift and its confidence interval,
``compare`` the verdicts and ``report`` their renderings.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad user input (a scenario or result file): one line, exit status 2."""
