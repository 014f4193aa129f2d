"""Rule evaluation at an instant T: occurrences -> conditions -> ... -> outbox."""
