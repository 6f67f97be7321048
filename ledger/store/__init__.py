"""The event store: the eventsourcing Application, database URLs, and our recorders."""
