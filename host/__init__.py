"""Host side."""
