"""The demo's wsgi.py: the one line a user adds is the last one."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from flowtrace import FlowTrace

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowtrace.demo.settings")
application = FlowTrace(get_wsgi_application())
