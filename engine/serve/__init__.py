"""`nudge serve`: landing pages, click tracking and unsubscribe over HTTP (docs/serve.md)."""
