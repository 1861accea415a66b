"""Metric definitions, written once as data, compiled by every layer."""
