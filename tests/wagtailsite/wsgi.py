from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.wagtailsite.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

from flowtrace import FlowTrace  # noqa: E402

application = FlowTrace(get_wsgi_application())
