"""Delivery: the dispatcher drains the outbox through policies and channel adapters.

Every claimed action ends sent, skipped (with a reason), deferred to a later time,
retried with backoff, or dead with its last error: nothing is dropped (DESIGN
invariant 2).
"""
