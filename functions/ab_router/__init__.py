"""Sticky A/B assignment: the same user key always reaches the same variant."""
