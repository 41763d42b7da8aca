"""A small S3 client, standard library only: what the board's pull and the host's publish need
(GET with If-None-Match and Range, PUT, HEAD, DELETE, ListObjectsV2, bucket creation), signed
with AWS Signature Version 4 or sent anonymously.

Why the board signs its own requests (SigV4 with scoped credentials) rather than using presigned
URLs the controller issues: a presigned SigV4 URL lives at most 7 days, so a board that is off
for longer could not report until the controller re-issued it a URL, which means one more write
per board per period and a board that must first fetch that URL; SigV4 itself is ~60 lines of
hmac/hashlib here. The credentials a board holds are scoped by the object store's policy: read
the bucket (or nothing, for a public-read bucket), write only ``PREFIX/status/BOARD/*``
(README: "Pull mode"). Nothing a board reads is trusted because of where it came from: every
desired-state document and bundle is checked against an SSH signature (device/trust.py).

Addressing: path style, ``ENDPOINT/BUCKET/KEY`` (AWS, MinIO, SeaweedFS and GCS's S3 interface all
serve it). A source is given as ``s3://BUCKET/PREFIX`` plus an endpoint, or as the URL
``http(s)://HOST[:PORT]/BUCKET/PREFIX``; ``s3://`` without an endpoint means AWS
(``https://s3.REGION.amazonaws.com``).

Errors: ``ObjectStoreUnreachable`` (connect refused or timed out, link cut, HTTP 5xx or 429),
``ObjectMissing`` (404), ``ObjectStoreError`` (anything else: 403 denied, a bad answer) — each
names the bucket and key.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import IO, Callable, Iterator, Mapping
from xml.etree import ElementTree

from ..errors import ObjectMissing, ObjectStoreError, ObjectStoreUnreachable

UNSIGNED = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CHUNK = 1 << 16
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None
    region: str = "us-east-1"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Credentials | None":
        """AWS's usual variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
        AWS_REGION / AWS_DEFAULT_REGION. None when no key is set (anonymous requests)."""
        env: Mapping[str, str] = os.environ if environ is None else environ
        key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        if not key or not secret:
            return None
        return cls(key, secret, env.get("AWS_SESSION_TOKEN") or None,
                   env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1")

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(access_key={self.access_key!r}, region={self.region!r})"


@dataclass(frozen=True)
class Location:
    """A prefix in a bucket on an endpoint."""

    endpoint: str      # scheme://host[:port], no trailing slash
    bucket: str
    prefix: str = ""   # no leading or trailing slash

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def url(self) -> str:
        return f"{self.endpoint}/{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def parse_location(text: str, endpoint: str | None = None, region: str = "us-east-1"
                   ) -> Location:
    """``s3://BUCKET[/PREFIX]`` (+ ENDPOINT) or ``http(s)://HOST[:PORT]/BUCKET[/PREFIX]``."""
    from ..errors import InputError

    u = urllib.parse.urlsplit(text.strip())
    if u.scheme == "s3":
        bucket, prefix = u.netloc, u.path.strip("/")
        ep = (endpoint or os.environ.get("AWS_ENDPOINT_URL_S3")
              or os.environ.get("AWS_ENDPOINT_URL") or f"https://s3.{region}.amazonaws.com")
    elif u.scheme in ("http", "https") and u.netloc:
        bucket, _, prefix = u.path.strip("/").partition("/")
        ep = f"{u.scheme}://{u.netloc}"
    else:
        raise InputError(f"{text!r} is not an object store location",
                         hint="give s3://BUCKET/PREFIX (with --endpoint URL for a store other "
                              "than AWS) or http(s)://HOST:PORT/BUCKET/PREFIX")
    e = urllib.parse.urlsplit(ep)
    if e.scheme not in ("http", "https") or not e.netloc:
        raise InputError(f"endpoint {ep!r}: expected http(s)://HOST[:PORT]")
    if not bucket or "/" in bucket:
        raise InputError(f"{text!r}: no bucket name")
    return Location(f"{e.scheme}://{e.netloc}", bucket, prefix)


# -- SigV4 (pure) -----------------------------------------------------------------------------
def _quote(s: str, safe: str = "") -> str:
    return urllib.parse.quote(s, safe="-_.~" + safe)


def canonical_query(query: dict[str, str]) -> str:
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def sign_v4(method: str, host: str, path: str, query: dict[str, str], headers: dict[str, str],
            payload_sha256: str, creds: Credentials, amz_date: str) -> dict[str, str]:
    """Pure: the headers to send (HEADERS plus host, x-amz-date, x-amz-content-sha256, the
    session token and Authorization). Every header given is signed. PATH is the raw key path
    (``/bucket/key``); it is URI-encoded here, once, as S3 wants. AMZ_DATE: YYYYMMDDTHHMMSSZ."""
    out = {k.lower(): str(v).strip() for k, v in headers.items()}
    out["host"] = host
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_sha256
    if creds.session_token:
        out["x-amz-security-token"] = creds.session_token
    names = sorted(out)
    canonical = "\n".join([method, _quote(path, "/"), canonical_query(query),
                           "".join(f"{n}:{' '.join(out[n].split())}\n" for n in names),
                           ";".join(names), payload_sha256])
    scope = f"{amz_date[:8]}/{creds.region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    sig = hmac.new(signing_key(creds.secret_key, amz_date[:8], creds.region), to_sign.encode(),
                   hashlib.sha256).hexdigest()
    out["authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                            f"SignedHeaders={';'.join(names)}, Signature={sig}")
    return out


def amz_now(t: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if t is None else t))


# -- the client -------------------------------------------------------------------------------
@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")


@dataclass
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: str


@dataclass
class Counters:
    """What a client sent and received (benchmarks: requests and bytes per poll)."""

    requests: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    by_method: dict[str, int] = field(default_factory=dict)


class S3Client:
    """One endpoint, one kept-alive connection (not thread-safe: one client per thread)."""

    def __init__(self, endpoint: str, creds: Credentials | None = None, *,
                 timeout: float = 15.0) -> None:
        u = urllib.parse.urlsplit(endpoint)
        self.endpoint = endpoint.rstrip("/")
        self.secure = u.scheme == "https"
        self.host = u.netloc
        self.creds = creds
        self.timeout = timeout
        self.counters = Counters()
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "S3Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.secure:
                self._conn = http.client.HTTPSConnection(
                    self.host, timeout=self.timeout, context=ssl.create_default_context())
            else:
                self._conn = http.client.HTTPConnection(self.host, timeout=self.timeout)
        return self._conn

    def _what(self, bucket: str, key: str) -> str:
        return f"s3://{bucket}/{key}".rstrip("/") + f" at {self.endpoint}"

    def request(self, method: str, bucket: str, key: str = "", *, query: dict | None = None,
                headers: dict | None = None, body: bytes | IO[bytes] | None = None,
                payload_sha256: str | None = None, sink: Callable[[bytes], None] | None = None,
                on_start: Callable[[int], None] | None = None,
                ok: tuple[int, ...] = (200, 204, 206)) -> Response:
        """One request; with SINK the body is streamed to it (only for an OK status, after
        ON_START(status)).
        Statuses in OK, 304 and 412 come back; 404 raises ObjectMissing, 5xx/429 and network
        failures ObjectStoreUnreachable, the rest ObjectStoreError."""
        query = {k: str(v) for k, v in (query or {}).items()}
        path = f"/{bucket}" + (f"/{key}" if key else "")
        hdrs = dict(headers or {})
        if isinstance(body, (bytes, bytearray)):
            payload = payload_sha256 or hashlib.sha256(body).hexdigest()
            size = len(body)
        elif body is None:
            payload, size = EMPTY_SHA256, 0
        else:
            payload = payload_sha256 or UNSIGNED
            size = os.fstat(body.fileno()).st_size - body.tell()
        if method in ("PUT", "POST"):
            hdrs["content-length"] = str(size)
        if self.creds is not None:
            hdrs = sign_v4(method, self.host, path, query, hdrs, payload, self.creds, amz_now())
        else:
            hdrs["host"] = self.host
        url = _quote(path, "/") + (f"?{canonical_query(query)}" if query else "")
        what = self._what(bucket, key)
        self.counters.requests += 1
        self.counters.by_method[method] = self.counters.by_method.get(method, 0) + 1
        self.counters.bytes_out += size
        for attempt in (0, 1):  # a kept-alive connection the server closed: once more, fresh
            conn = self._connection()
            try:
                conn.request(method, url, body=body, headers=hdrs)
                resp = conn.getresponse()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if attempt or (body is not None and not isinstance(body, (bytes, bytearray))):
                    raise ObjectStoreUnreachable(f"{what}: connection lost ({exc})") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise ObjectStoreUnreachable(f"{what}: {_reason(exc)}",
                                             hint="is the object store up and reachable?") \
                    from exc
        rh = {k.lower(): v for k, v in resp.getheaders()}
        try:
            if resp.status in ok and sink is not None:
                if on_start is not None:
                    on_start(resp.status)
                while chunk := resp.read(CHUNK):
                    self.counters.bytes_in += len(chunk)
                    sink(chunk)
                data = b""
            else:
                data = resp.read()
                self.counters.bytes_in += len(data)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ObjectStoreUnreachable(f"{what}: cut mid-answer ({_reason(exc)})") from exc
        if rh.get("connection", "").lower() == "close":
            self.close()
        if resp.status in ok or resp.status in (304, 412):
            return Response(resp.status, rh, data)
        code, message = _error_of(data)
        text = f"{what}: HTTP {resp.status}" + (f" {code}" if code else "") + \
            (f": {message}" if message else "")
        if resp.status == 404:
            raise ObjectMissing(text)
        if resp.status >= 500 or resp.status == 429:
            raise ObjectStoreUnreachable(text, hint="the object store is overloaded or down; "
                                                    "retry later")
        raise ObjectStoreError(text, hint="check the credentials and what they may do"
                               if resp.status == 403 else None)

    # -- the operations ------------------------------------------------------------------
    def get(self, bucket: str, key: str, *, if_none_match: str | None = None) -> Response:
        """The whole object (small ones); status 304 when IF_NONE_MATCH is its ETag."""
        h = {"if-none-match": if_none_match} if if_none_match else {}
        return self.request("GET", bucket, key, headers=h)

    def head(self, bucket: str, key: str) -> Response | None:
        try:
            return self.request("HEAD", bucket, key)
        except ObjectMissing:
            return None

    def put(self, bucket: str, key: str, data: bytes | IO[bytes], *,
            content_type: str = "application/octet-stream",
            payload_sha256: str | None = None) -> Response:
        return self.request("PUT", bucket, key, body=data, payload_sha256=payload_sha256,
                            headers={"content-type": content_type})

    def delete(self, bucket: str, key: str) -> None:
        try:
            self.request("DELETE", bucket, key)
        except ObjectMissing:
            pass

    def create_bucket(self, bucket: str) -> None:
        try:
            self.request("PUT", bucket, "", body=b"")
        except ObjectStoreError as exc:
            if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                raise

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under PREFIX (ListObjectsV2, a page of 1000 per request)."""
        token = None
        while True:
            q = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
            if token:
                q["continuation-token"] = token
            r = self.request("GET", bucket, "", query=q)
            try:
                root = ElementTree.fromstring(r.body)
            except ElementTree.ParseError as exc:
                raise ObjectStoreError(f"{self._what(bucket, prefix)}: unreadable listing "
                                       f"({exc})") from exc
            for c in root.iter(f"{_S3_NS}Contents"):
                yield ObjectInfo(c.findtext(f"{_S3_NS}Key") or "",
                                 int(c.findtext(f"{_S3_NS}Size") or 0),
                                 (c.findtext(f"{_S3_NS}ETag") or "").strip(),
                                 c.findtext(f"{_S3_NS}LastModified") or "")
            if (root.findtext(f"{_S3_NS}IsTruncated") or "").lower() != "true":
                return
            token = root.findtext(f"{_S3_NS}NextContinuationToken")
            if not token:
                return


def _error_of(body: bytes) -> tuple[str, str]:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return "", body[:200].decode("utf-8", "replace").strip()
    return root.findtext("Code") or "", root.findtext("Message") or ""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
