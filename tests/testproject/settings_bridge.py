"""The test project with async probes around the sync-only DelayMiddleware (ASGI)."""

from tests.testproject.settings import *  # noqa: F403

_DELAY = "tests.testproject.middleware.DelayMiddleware"
_AT = MIDDLEWARE.index(_DELAY)  # noqa: F405
MIDDLEWARE = [
    *MIDDLEWARE[:_AT],  # noqa: F405
    "tests.testproject.middleware.HandoffOuter",
    _DELAY,
    "tests.testproject.middleware.HandoffInner",
    *MIDDLEWARE[_AT + 1 :],  # noqa: F405
]
