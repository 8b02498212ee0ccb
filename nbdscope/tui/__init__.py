"""The Textual terminal UI: a view over decoder events and engine findings (it never parses bytes)."""
