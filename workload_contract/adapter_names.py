"""Adapter names with a meaning of their own to the launcher and the gateway."""

# With several adapters, the launcher serves the exact weighted sum of all of them under this name, and
# Kaito's /chat applies it when a request names no adapter; the hooks refuse it as a user's adapter name.
COMBINED_ADAPTER = "combined"
