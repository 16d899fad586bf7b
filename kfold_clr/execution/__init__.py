"""Execution: the whole experiment (`experiment`), where jobs run (`executors`, `worker`) and the
progress display (`progress`)."""
