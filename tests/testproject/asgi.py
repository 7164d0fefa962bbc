"""The test project under ASGI: Django's ASGIHandler wrapped by FlowTrace."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.testproject.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

from flowtrace import FlowTrace  # noqa: E402

django_app = get_asgi_application()
application = FlowTrace(django_app)
