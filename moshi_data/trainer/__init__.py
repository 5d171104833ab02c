"""Small Moshi-style multi-stream trainer (PyTorch)."""
