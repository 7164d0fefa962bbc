"""On the exporter thread: a finished Timeline becomes a tree of stage nodes
and exact exclusive totals (what the numbers are). No I/O, no SDK objects."""
