"""Read models: projections of the event store into SQL tables, batched and tracked."""
