"""``python -m flowtrace``: the same as the ``flowtrace`` command."""

from __future__ import annotations

from flowtrace.cli import main

raise SystemExit(main())
