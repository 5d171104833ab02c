"""Text stages of the Helium recipe (pure functions and small stage objects)."""
