from __future__ import annotations

import time

from django import template

register = template.Library()


@register.simple_tag
def sleep_ms(ms: str) -> str:
    time.sleep(float(ms) / 1000)
    return ""
