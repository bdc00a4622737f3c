"""Whole pipelines in one call: ``fit`` (ingest → split → prepare → train → evaluate) and ``demo``."""
