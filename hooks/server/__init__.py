"""The hook server: a Flask app with one blueprint per hook family, shared error handling, metrics, logs."""
