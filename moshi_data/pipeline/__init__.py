"""Runner-free stage logic of the moshi-data pipeline (text, audio)."""
