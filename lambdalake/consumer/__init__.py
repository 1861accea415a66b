"""Consumer runtime: shard leases, checkpoints, retries and DLQ for every consumer group.

See ``processor.py`` for the contract a group implements and ``worker.py`` for the runtime.
"""

from lambdalake.consumer.config import ConsumerConfig
from lambdalake.consumer.metrics import ConsumerMetrics, start_metrics_server
from lambdalake.consumer.processor import (
    BatchContext,
    RecordProcessor,
    RetryLater,
    ShutdownReason,
    sequence_key,
)
from lambdalake.consumer.worker import ConsumerWorker, install_signal_handlers

__all__ = [
    "BatchContext",
    "ConsumerConfig",
    "ConsumerMetrics",
    "ConsumerWorker",
    "RecordProcessor",
    "RetryLater",
    "ShutdownReason",
    "install_signal_handlers",
    "sequence_key",
    "start_metrics_server",
]
