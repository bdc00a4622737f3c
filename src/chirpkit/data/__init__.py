"""Data stages: ingest (sources → catalog), split, prepare (catalog → store), datasets."""
