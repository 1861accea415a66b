"""The Python producer SDK under the platform's name: ``from lambdalake.client import Producer``."""

from ingest.producer import BatchOutcome, Producer, ProducerStats, default_endpoint

__all__ = ["BatchOutcome", "Producer", "ProducerStats", "default_endpoint"]
