"""The domain: Campaign and Registration aggregates and their events (no persistence)."""
