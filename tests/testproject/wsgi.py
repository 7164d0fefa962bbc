"""Test entry points: the demo stack, validated by wsgiref on both sides."""

from __future__ import annotations

import os
from wsgiref.validate import validator

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.testproject.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

from flowtrace import FlowTrace  # noqa: E402

django_app = get_wsgi_application()
traced = FlowTrace(django_app)
# The validator hides wsgi.file_wrapper objects, so `traced` is also served bare.
application = validator(traced)
