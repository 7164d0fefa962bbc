"""The request path: timestamps only, no OpenTelemetry SDK objects.

Front ends (``flowtrace.wsgi``) and the Django hooks (``capture.django``)
append events to a per-request ``Timeline``; nothing here builds a span.
"""
