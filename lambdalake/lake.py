"""The lake, addressed by URI (``file:///…`` locally, ``s3://bucket/…`` on AWS), never by path.

Zones and their layout (DESIGN.md): ``raw/events/year=/month=/day=/hour=/``, ``clean/``,
``curated/<table>/``, ``errors/`` and ``reference/``. Writes are atomic: a reader sees the old
file or the new one, never a part (temp file + rename on disk; a single PUT on S3).
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlparse

from lambdalake.settings import Settings

ZONES = ("raw", "clean", "curated", "errors", "reference")
REFERENCE_PRODUCTS = "reference/products/products.csv"
REFERENCE_PROMOS = "reference/promos/promos.csv"


def join(base_uri: str, *parts: str) -> str:
    return "/".join([base_uri.rstrip("/"), *(p.strip("/") for p in parts)])


def filesystem(uri: str, settings: Settings | None = None) -> tuple[Any, str]:
    """A pyarrow filesystem for the URI and the path inside it."""
    from pyarrow import fs

    if urlparse(uri).scheme == "s3" and settings is not None and settings.s3_endpoint_url:
        endpoint = urlparse(settings.s3_endpoint_url)
        kwargs = settings.aws_client_kwargs()
        filesystem_ = fs.S3FileSystem(
            region=kwargs["region_name"],
            access_key=kwargs.get("aws_access_key_id"),
            secret_key=kwargs.get("aws_secret_access_key"),
            endpoint_override=endpoint.netloc,
            scheme=endpoint.scheme or "http",
        )
        parsed = urlparse(uri)
        return filesystem_, f"{parsed.netloc}{parsed.path}"
    return fs.FileSystem.from_uri(uri)


def write_bytes(uri: str, data: bytes, settings: Settings | None = None) -> None:
    """Write a whole object atomically."""
    from pyarrow import fs

    filesystem_, path = filesystem(uri, settings)
    if isinstance(filesystem_, fs.LocalFileSystem):
        parent = path.rsplit("/", 1)[0]
        filesystem_.create_dir(parent, recursive=True)
        temp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        with filesystem_.open_output_stream(temp) as out:
            out.write(data)
        filesystem_.move(temp, path)
    else:  # one PUT: S3 makes the object visible only once it is complete
        with filesystem_.open_output_stream(path) as out:
            out.write(data)


def read_bytes(uri: str, settings: Settings | None = None) -> bytes:
    filesystem_, path = filesystem(uri, settings)
    with filesystem_.open_input_stream(path) as stream:
        return bytes(stream.read())


def list_files(uri: str, settings: Settings | None = None, recursive: bool = True) -> list[tuple[str, int]]:
    """(URI, size) of every object under a prefix, sorted; an absent prefix has none."""
    from pyarrow import fs

    filesystem_, path = filesystem(uri, settings)
    selector = fs.FileSelector(path.rstrip("/"), allow_not_found=True, recursive=recursive)
    base, inner = uri.rstrip("/"), path.rstrip("/")
    out = [
        (base + info.path[len(inner) :], int(info.size or 0))
        for info in filesystem_.get_file_info(selector)
        if info.type == fs.FileType.File
    ]
    return sorted(out)


def exists(uri: str, settings: Settings | None = None) -> bool:
    from pyarrow import fs

    filesystem_, path = filesystem(uri, settings)
    return bool(filesystem_.get_file_info(path).type == fs.FileType.File)


def delete(uri: str, settings: Settings | None = None) -> None:
    """Delete an object; deleting one that is already gone is not an error (retries repeat deletes)."""
    from pyarrow import fs

    filesystem_, path = filesystem(uri, settings)
    if filesystem_.get_file_info(path).type == fs.FileType.File:
        filesystem_.delete_file(path)
