"""Publishing an export's uploaded object to its sink key, fenced against stale attempts.

The run uploaded its export to a hidden object next to the sink
(`objects.upload`); the worker makes it the sink's object here, just before
the finishing transaction (store/queue.py). A worker that stalls past
`DATAMILL_WORKER_LOST_SECONDS` after checking the run is still its own
loses the run to a retry; when it wakes, its publish must not land on top
of the retry's. So a publish is a multipart upload to the sink key, filled
by server-side part copies of the hidden object, and completed only:

1. after every other pending upload to that key was aborted, then
2. after the run was found still this attempt's (`still_ours`).

A newer attempt exists only once the stale one has lost the run, that is
after the stale attempt's check (2); its abort (1) comes later still, so it
finds the stale upload, created before that check, still pending (then the
stale completion fails: the upload is gone) or already completed (then the
newer attempt completes after it, on top). Either way the newer data is
the sink's. docs/decisions.md ("Fenced object-store publishing") has the
whole argument, and what stores must provide for it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from datamill.engine.objects import ObjectPath, parse, unreachable

if TYPE_CHECKING:
    from datamill.engine.objects import ObjectStore

# Bytes per part copy: S3 allows 5 MiB to 5 GiB a part and 10,000 parts, so
# objects up to 10 TB (S3's own limit is 5 TB); one part below this size.
PART_BYTES = 1 << 30
# How often a publish whose upload was refused or aborted by another publisher
# (two jobs writing one sink at the same time) starts again while the run is
# still its own.
TRIES = 5


def _always() -> bool:
    return True


@functools.lru_cache(maxsize=8)
def _client(endpoint: str | None, region: str, access_key: str | None, secret: str | None) -> Any:
    """A botocore S3 client (built once: loading the service model takes a while)."""
    import botocore.session
    from botocore.config import Config

    if endpoint is not None and "://" not in endpoint:
        endpoint = f"https://{endpoint}"  # as pyarrow's file system reads it
    return botocore.session.get_session().create_client(
        "s3",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        # Path style, as pyarrow's file system addresses an endpoint override.
        config=Config(s3={"addressing_style": "path"}),
    )


def client(store: ObjectStore) -> Any:
    """The S3 client for the operator's store: the requests pyarrow's file system cannot make."""
    return _client(store.endpoint, store.region, store.access_key, store.secret_key)


def publish(
    store: ObjectStore, temporary: str, uri: str, still_ours: Callable[[], bool] = _always
) -> bool:
    """Make the uploaded temporary object the sink's object, whole or not at all.

    False, publishing nothing, when `still_ours` says the run is no longer
    this attempt's at the last moment. The temporary object is removed in
    every case. A failure raises OSError, as a failed local move does: the
    worker ends the run in ERROR.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    source, target = parse(temporary, "staged object"), parse(uri, "sink path")
    s3 = store.client()
    try:
        size = int(s3.head_object(Bucket=source.bucket, Key=source.key)["ContentLength"])
        published = _fenced_once(s3, source, target, size, still_ours)
        for _ in range(TRIES - 1):
            if not isinstance(published, Exception):
                break
            published = _fenced_once(s3, source, target, size, still_ours)
        if isinstance(published, Exception):
            raise published
    except (BotoCoreError, ClientError) as error:
        _remove(s3, source)
        raise OSError(unreachable("write", target, error).message) from None
    _remove(s3, source)
    return published


def _fenced_once(
    s3: Any, source: ObjectPath, target: ObjectPath, size: int, still_ours: Callable[[], bool]
) -> bool | Exception:
    """One try: True published, False no longer ours, or why this try failed (try again).

    Any refusal once our upload exists is tried again, not only S3's
    NoSuchUpload (another publisher of the key aborted it since we began):
    moto answers a completion of an aborted upload with a 500, and a store
    may well do the same. The next try checks the run is still ours.
    """
    from botocore.exceptions import ClientError

    where = {"Bucket": target.bucket, "Key": target.key}
    upload_id = s3.create_multipart_upload(**where)["UploadId"]
    try:
        parts = _copy_parts(s3, source, where, upload_id, size)
        # The fence: a stale attempt's pending upload is gone before we check.
        _abort_others(s3, where, upload_id)
        if not still_ours():
            _abort(s3, where, upload_id)
            return False
        s3.complete_multipart_upload(**where, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except ClientError as error:
        _abort(s3, where, upload_id)
        failure: Exception = error
        return failure
    return True


def _copy_parts(
    s3: Any, source: ObjectPath, where: dict[str, str], upload_id: str, size: int
) -> list[dict[str, Any]]:
    """Copy the source into the upload's parts, server-side; the parts, for the completion."""
    if size == 0:
        # A range cannot name zero bytes: the one (empty) part is uploaded.
        answer = s3.upload_part(**where, UploadId=upload_id, PartNumber=1, Body=b"")
        return [{"PartNumber": 1, "ETag": answer["ETag"]}]
    copy_source = {"Bucket": source.bucket, "Key": source.key}
    parts = []
    for number, start in enumerate(range(0, size, PART_BYTES), start=1):
        end = min(start + PART_BYTES, size) - 1
        answer = s3.upload_part_copy(
            **where,
            UploadId=upload_id,
            PartNumber=number,
            CopySource=copy_source,
            CopySourceRange=f"bytes={start}-{end}",
        )
        parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
    return parts


def _abort_others(s3: Any, where: dict[str, str], upload_id: str) -> None:
    """Abort every pending upload to the key but ours: a stale attempt can no longer complete it."""
    pages = s3.get_paginator("list_multipart_uploads").paginate(
        Bucket=where["Bucket"], Prefix=where["Key"]
    )
    for page in pages:
        for pending in page.get("Uploads", []):
            if pending["Key"] == where["Key"] and pending["UploadId"] != upload_id:
                # Not quietly: an upload left pending here is one that may still land.
                _abort(s3, where, pending["UploadId"], strict=True)


def _abort(s3: Any, where: dict[str, str], upload_id: str, *, strict: bool = False) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.abort_multipart_upload(**where, UploadId=upload_id)
    except ClientError as error:
        gone = error.response.get("Error", {}).get("Code") == "NoSuchUpload"
        if strict and not gone:
            raise
    except BotoCoreError:
        if strict:
            raise
        # Otherwise left to the bucket's rule on incomplete multipart uploads.


def _remove(s3: Any, path: ObjectPath) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    # Failing, left to the bucket's rule on `.datamill-*` objects.
    with contextlib.suppress(BotoCoreError, ClientError):
        s3.delete_object(Bucket=path.bucket, Key=path.key)
