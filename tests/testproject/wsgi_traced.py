"""mod_wsgi-express takes a script file: the traced test project, as a user's wsgi.py."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.testproject.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

from flowtrace import FlowTrace  # noqa: E402

application = FlowTrace(get_wsgi_application())
