"""flowtrace: where each Django request's time really goes, as OpenTelemetry.

``application = FlowTrace(get_wsgi_application())`` in ``wsgi.py`` is the
whole setup. ``FlowTrace`` is the only public name.
"""

from __future__ import annotations

from flowtrace.wsgi import FlowTrace

__version__ = "0.1.0"

__all__ = ["FlowTrace", "__version__"]
