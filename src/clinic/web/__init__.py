"""Shared web pieces: request dependencies, templates, error rendering, page layout."""
