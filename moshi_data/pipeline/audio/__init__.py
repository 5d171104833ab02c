"""Audio stages of the Moshi recipe (pure functions and small stage objects)."""
