"""Orchestration of the batch layer: quality gates, the batch watermark, the per-hour pipeline.

DAGs in ``dags/`` and ``lambdalake batch`` call these functions; neither holds logic of its own.
"""
