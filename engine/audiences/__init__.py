"""Retargeting audiences: membership, per-platform normalisation, sync and export."""
