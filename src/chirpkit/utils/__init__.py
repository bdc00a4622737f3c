"""Shared machinery below every stage: files and atomic writes, threads and stop requests, run
environment facts, plots, the work-unit engine, compatibility steps.
"""
