"""The process itself: TensorFlow set-up, thread limits and shared GPUs (`runtime`), and stop
requests that are never lost (`interrupt`). Every other layer may use these."""
