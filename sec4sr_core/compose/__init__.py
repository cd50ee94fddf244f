"""compose layer."""
