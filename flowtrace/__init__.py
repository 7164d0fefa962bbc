"""flowtrace: where each Django request's time really goes, as OpenTelemetry.

``application = FlowTrace(get_wsgi_application())`` in ``wsgi.py``, or
``application = FlowTrace(get_asgi_application())`` in ``asgi.py``, is the
whole setup. ``FlowTrace`` sees which protocol it wraps; ``FlowTraceASGI`` is
the ASGI front end it returns for an ASGI application.
"""

from __future__ import annotations

from flowtrace.asgi import FlowTraceASGI
from flowtrace.wsgi import FlowTrace

__version__ = "0.1.0"

__all__ = ["FlowTrace", "FlowTraceASGI", "__version__"]
