"""Bot jobs over WebSocket: the hub client, the /ingest server, the event schema."""
