"""Three page types, a bakery's: the home page, breads (with a repeated per-row
query, the N+1 a CMS page typically has) and blog posts."""

from __future__ import annotations

import os
from typing import Any

from django.core.cache import cache
from django.db import models
from wagtail.models import Page


class HomePage(Page):
    def get_context(self, request: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context(request, *args, **kwargs)
        context["children"] = list(self.get_children().live())
        context["cached"] = cache.get_many([f"home:{i}" for i in range(10)])
        return context


class BreadPage(Page):
    origin = models.CharField(max_length=100, blank=True)

    def get_context(self, request: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context(request, *args, **kwargs)
        siblings = list(self.get_siblings().live())
        # one query per sibling: the N+1 a real page template does
        context["titles"] = [Page.objects.filter(pk=s.pk).values_list("title", flat=True)[0]
                             for s in siblings]  # fmt: skip
        if os.environ.get("FLOWTRACE_TEST_REGRESSION") == "1":  # the injected regression
            Page.objects.filter(pk=self.pk).exists()
            sum(i * i for i in range(20_000))
        return context


class BlogPage(Page):
    body = models.TextField(blank=True)
