"""Object-store (`s3a://bucket/prefix`) locations: URIs checked, objects listed and moved.

An operator root, and so a location, may be an S3 prefix. No engine reads
the object store itself: the run's process copies the objects a source
names into the run's staging folder before the engine starts, and the
worker uploads an export's staged file to its object when it publishes the
run (docs/scale-out.md, "Object stores"). So both engines read and write
object-store locations the same way, Spark needs no Hadoop S3 connector,
and everything an engine touches is a local (or shared) file that the usual
checks confine.

The sandbox lives in `parse`: a URI names one bucket and a key of plain
segments, never `..`, `.`, an empty segment (doubled slash), `%` (no
percent-encoding to hide a `/` or a `..`), a backslash or a control
character; `inside` compares bucket and whole segments. Credentials and the
endpoint come from the operator's settings only (`ObjectStore`), are never
part of a definition, and no message or log line shows them or the object
store's own error text (which may name the endpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fnmatch
import logging
import os
import re
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from datamill.errors import InvalidInput, JobFailed, PathNotAllowed

if TYPE_CHECKING:
    import pyarrow.fs as pafs

SCHEME = "s3a://"
# A bucket name as S3 allows it (lower case, digits, dots, hyphens; 3-63).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# The characters a key segment may hold: enough for file and partition names
# (`year=2024`, `part-0001.csv`), nothing any reader treats specially.
_SEGMENT = re.compile(r"[A-Za-z0-9_.=+@~,-]+")
_GLOB_SEGMENT = re.compile(r"[A-Za-z0-9_.=+@~,*?\[\]!-]+")
_GLOB_CHARS = frozenset("*?[")
# Where the copies of a run's source objects go, inside its staging folder;
# removed before the run ends, so it is never published.
COPIES = "_objects"
# The start of the hidden objects runs upload to (`temporary_uri`); no sink may be so named.
HIDDEN_PREFIX = ".datamill-"
# Keys one listing request returns at most (S3's own maximum).
LIST_PAGE = 1000
# Keys a glob's listing reads at most, matching or not: the match cap alone
# let a glob with few matches over a huge prefix (a location on a whole
# bucket) keep a worker listing for hours; this is a thousand requests.
LIST_KEYS_MAX = 1_000_000
# The longest file name a copy gets (key segments are ASCII: one byte a character).
_LOCAL_NAME_MAX = 200
# How much of an object a copy reads and writes at a time.
_CHUNK = 8 << 20
# The local errors of a disk (or a quota) that is full.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_log = logging.getLogger(__name__)


def is_uri(text: str) -> bool:
    """Whether a root, folder or path is a URI (`scheme://...`) rather than a local path."""
    return "://" in text


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectPath:
    """One bucket and a key (no leading or trailing slash; empty: the whole bucket)."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        """The canonical `s3a://bucket/key` spelling."""
        return f"{SCHEME}{self.bucket}/{self.key}" if self.key else f"{SCHEME}{self.bucket}"

    @property
    def arrow(self) -> str:
        """The path as pyarrow's S3 file system names it."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    def child(self, relative: str) -> ObjectPath:
        """The object `relative` (plain segments) below this prefix."""
        return ObjectPath(self.bucket, f"{self.key}/{relative}" if self.key else relative)


def parse(uri: str, what: str, *, glob: bool = False) -> ObjectPath:
    """The bucket and key of an `s3a://` URI, or a clear refusal.

    One trailing slash is allowed (a prefix); every other empty segment, `.`
    and `..` segments, `%` and characters outside a plain set are refused,
    so no spelling reaches outside the prefix it seems to name.
    """
    if not uri.startswith(SCHEME):
        raise PathNotAllowed(
            f"{what}: {uri!r} is not supported: object-store locations are s3a:// URIs"
        )
    rest = uri[len(SCHEME) :]
    bucket, _, key = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise PathNotAllowed(f"{what}: {uri!r} does not name a valid bucket")
    key = key.removesuffix("/")
    if not key:
        return ObjectPath(bucket, "")
    allowed = _GLOB_SEGMENT if glob else _SEGMENT
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not allowed.fullmatch(segment):
            raise PathNotAllowed(
                f"{what}: {uri!r} must be plain names separated by single slashes"
                " (letters, digits and _ . = + @ ~ , -; no '..', no '%')"
            )
    return ObjectPath(bucket, key)


def inside(path: ObjectPath, prefix: ObjectPath) -> bool:
    """Whether `path` is `prefix` or below it (whole segments, same bucket)."""
    if path.bucket != prefix.bucket:
        return False
    return not prefix.key or path.key == prefix.key or path.key.startswith(prefix.key + "/")


def inside_any(path: ObjectPath, prefixes: tuple[str, ...]) -> bool:
    """Whether `path` lies inside one of the `s3a://` `prefixes` (local roots are ignored)."""
    return any(inside(path, parse(p, "root")) for p in prefixes if is_uri(p))


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectStore:
    """How to reach the object store: the operator's settings, never a definition's."""

    endpoint: str | None = None
    region: str = "us-east-1"
    # Not shown by repr: a request may be logged or printed while debugging.
    access_key: str | None = dataclasses.field(default=None, repr=False)
    secret_key: str | None = dataclasses.field(default=None, repr=False)

    def filesystem(self) -> pafs.S3FileSystem:
        """A pyarrow S3 file system for these settings (no bucket is ever created)."""
        import pyarrow.fs as pafs

        scheme = None
        endpoint = self.endpoint
        if endpoint is not None and "://" in endpoint:
            scheme, _, endpoint = endpoint.partition("://")
        return pafs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            endpoint_override=endpoint,
            scheme=scheme or "https",
            allow_bucket_creation=False,
            allow_bucket_deletion=False,
        )

    def client(self) -> Any:
        """A botocore S3 client for these settings (engine/object_publish.py)."""
        from datamill.engine.object_publish import client

        return client(self)


def unreachable(action: str, path: ObjectPath, error: Exception) -> JobFailed:
    """The failure shown for a store error: the action and object, never the store's own text."""
    # The store's own text may name the endpoint: logged by type only, never shown.
    _log.warning("object store: %s %s failed (%s)", action, path.uri, type(error).__name__)
    return JobFailed(
        f"cannot {action} {path.uri}: the object store refused or could not be reached"
    )


def _segments_match(pattern: list[str], key: list[str]) -> bool:
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        # `**` stands for any folders, none of them hidden.
        return any(
            _segments_match(rest, key[i:]) and not any(k.startswith(".") for k in key[:i])
            for i in range(len(key) + 1)
        )
    if not key:
        return False
    if any(c in _GLOB_CHARS for c in head):
        # Like the local expansion: wildcards do not match hidden names.
        if key[0].startswith(".") or not fnmatch.fnmatchcase(key[0], head):
            return False
    elif head != key[0]:
        return False
    return _segments_match(rest, key[1:])


def match_objects(
    store: ObjectStore,
    pattern: str,
    roots: tuple[str, ...],
    excluded: tuple[str, ...] = (),
    limit: int = 10_000,
) -> list[tuple[ObjectPath, int]]:
    """The objects a source URI (a glob or not) names, each inside `roots`, sorted by key.

    Each with its size in bytes, as listed: what copying it will write.
    """
    import pyarrow.fs as pafs

    wanted = parse(pattern, "source path", glob=True)
    if not inside_any(wanted, roots):
        raise PathNotAllowed(f"source path {pattern!r} is outside the allowed folders")
    parts = wanted.key.split("/")
    fixed = next((i for i, p in enumerate(parts) if any(c in _GLOB_CHARS for c in p)), None)
    if fixed is None:
        try:
            info = store.filesystem().get_file_info(wanted.arrow)
        except OSError as error:
            raise unreachable("read", wanted, error) from None
        if info.type != pafs.FileType.File or inside_any(wanted, excluded):
            raise InvalidInput(f"source file {pattern!r} does not exist or is not a file")
        return [(wanted, info.size or 0)]
    base = ObjectPath(wanted.bucket, "/".join(parts[:fixed]))
    found: list[tuple[ObjectPath, int]] = []
    # Page by page, so a glob over a large prefix is refused as soon as it
    # passes the cap, not after listing every key below the prefix.
    for listed, (key, size) in enumerate(_listed(store, base), start=1):
        if listed > LIST_KEYS_MAX:
            raise InvalidInput(
                f"source glob {pattern!r} lists more than {LIST_KEYS_MAX} objects:"
                " give more of its folders without wildcards"
            )
        try:
            path = parse(f"{SCHEME}{wanted.bucket}/{key}", "object")
        except PathNotAllowed:
            continue  # a key no definition could name (or a folder marker): never matched
        if not inside_any(path, roots) or inside_any(path, excluded):
            continue  # a more specific location the owner may not read (N6)
        if _segments_match(parts[fixed:], path.key.split("/")[fixed:]):
            found.append((path, size))
            if len(found) > limit:
                raise InvalidInput(f"source glob {pattern!r} matches more than {limit} files")
    if not found:
        raise InvalidInput(f"source glob {pattern!r} matches no file")
    return sorted(found, key=lambda p: p[0].key)


def _listed(store: ObjectStore, base: ObjectPath) -> Iterator[tuple[str, int]]:
    """The keys below the prefix `base` with their sizes, one listing request at a time."""
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = store.client()
    request: dict[str, Any] = {
        "Bucket": base.bucket,
        "Prefix": f"{base.key}/" if base.key else "",
        "MaxKeys": LIST_PAGE,
    }
    while True:
        try:
            page = s3.list_objects_v2(**request)
        except (BotoCoreError, ClientError) as error:
            raise unreachable("list", base, error) from None
        for item in page.get("Contents", []):
            yield str(item["Key"]), int(item["Size"])
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
        request["ContinuationToken"] = token


def _local_name(key: str) -> str:
    """The copy's file name: the object's, cut to its end when too long for a local file.

    S3 allows 1024 bytes per key, a local file system 255 per name; the end
    keeps the extensions (`.csv.gz`) the engine reads the format by, and the
    `o` keeps a cut name from starting with a dot (a hidden file globs skip).
    """
    name = key.rsplit("/", 1)[-1]
    return name if len(name) <= _LOCAL_NAME_MAX else "o" + name[-_LOCAL_NAME_MAX:]


def copy_in(
    store: ObjectStore, objects: list[ObjectPath], folder: str, budget: int | None = None
) -> list[str]:
    """Copy each object to `folder/<n>/<its name>`; the local paths, in the objects' order.

    At most `budget` bytes in all (None: no bound): an object replaced by a
    larger one after the listing that was checked cannot fill the disk.
    """
    fs = store.filesystem()
    local = []
    left = budget
    for index, path in enumerate(objects):
        target_folder = os.path.join(folder, f"{index:05d}")
        target = os.path.join(target_folder, _local_name(path.key))
        try:
            os.makedirs(target_folder, exist_ok=True)
            with fs.open_input_stream(path.arrow) as source, open(target, "wb") as out:
                while chunk := source.read(_CHUNK):
                    if left is not None and (left := left - len(chunk)) < 0:
                        raise JobFailed(
                            f"cannot copy {path.uri}: the source grew past the {budget} bytes"
                            " this run may copy since it was listed"
                        )
                    out.write(chunk)
        except OSError as error:
            if error.errno in _DISK_FULL:
                # The local disk, not the object store: the operator's to fix.
                raise JobFailed(f"the worker's disk is full while copying {path.uri}") from None
            raise unreachable("read", path, error) from None
        local.append(target)
    return local


def upload(store: ObjectStore, staged: str, uri: str) -> None:
    """Upload a staged file to the (hidden, temporary) object `uri`; removed again on failure."""
    path = parse(uri, "sink path")
    fs = store.filesystem()
    try:
        # pyarrow completes the upload when the stream closes, even after an
        # error: that is why this goes to a hidden temporary key, never the sink's.
        with open(staged, "rb") as source, fs.open_output_stream(path.arrow) as out:
            shutil.copyfileobj(source, out, 8 << 20)
    except OSError as error:
        with contextlib.suppress(OSError):
            fs.delete_file(path.arrow)
        raise unreachable("write", path, error) from None


def temporary_uri(final: str, attempt: str) -> str:
    """The hidden object next to `final` that a run uploads to before it is published."""
    path = parse(final, "sink path")
    folder, _, name = path.key.rpartition("/")
    hidden = f"{HIDDEN_PREFIX}{attempt}.{name}"
    return ObjectPath(path.bucket, f"{folder}/{hidden}" if folder else hidden).uri


def discard(store: ObjectStore | None, moves: tuple[tuple[str, str], ...]) -> None:
    """Remove the hidden objects a run uploaded (`upload`) that will never be published.

    A run that ends without publishing (over its output limit, no longer its
    worker's) would otherwise leave its whole output in the sink's prefix,
    where nothing lists or removes it: storage the run was refused.
    """
    uploaded = [parse(staged, "staged object") for staged, _ in moves if is_uri(staged)]
    if store is None or not uploaded:
        return
    fs = store.filesystem()
    for path in uploaded:
        with contextlib.suppress(OSError):
            fs.delete_file(path.arrow)
