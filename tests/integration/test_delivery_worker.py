"""A delivery worker process for the kill -9 test: `lambdalake deliver` with every file write
slowed down and each flush in progress marked by a file, so the test can kill it mid-flush.

    python tests/integration/test_delivery_worker.py MARKER_DIR WRITE_DELAY_S

Settings come from the LAMBDALAKE_* environment, as for any lambdalake process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(marker_dir: Path, delay_s: float) -> None:
    from ingest.delivery.processor import DeliveryProcessor
    from lambdalake import lake
    from lambdalake.cli.deliver import deliver

    write_bytes = lake.write_bytes

    def slow_write(uri: str, data: bytes, settings: Any = None) -> None:
        write_bytes(uri, data, settings)
        time.sleep(delay_s)

    lake.write_bytes = slow_write  # type: ignore[assignment]
    process_records = DeliveryProcessor.process_records

    def marked(self: DeliveryProcessor, records: Any, ctx: Any) -> None:
        marker = marker_dir / ctx.shard_id
        marker.write_text(f"{records[0].sequence_number}-{records[-1].sequence_number}")
        process_records(self, records, ctx)
        marker.unlink()

    DeliveryProcessor.process_records = marked  # type: ignore[method-assign]
    deliver(errors=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]))
