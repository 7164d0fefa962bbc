"""Off the request thread: the bounded pipeline, the recorder, and everything
that talks OpenTelemetry (SDK spans and metrics, the direct OTLP encoder and
client, learned layouts, providers, sampling)."""
