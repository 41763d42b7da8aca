"""SigV4 (device/s3.py) against the worked examples in AWS's S3 documentation
("Signature Calculations for the Authorization Header: Transferring Payload in a Single Chunk"),
and the pure location parsing."""

import pytest

from edgedeploy.device.s3 import EMPTY_SHA256, Credentials, Location, parse_location, sign_v4
from edgedeploy.errors import InputError

AWS = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
HOST = "examplebucket.s3.amazonaws.com"
DATE = "20130524T000000Z"


def _sig(headers: dict) -> tuple[str, str]:
    auth = headers["authorization"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0]
    return signed, auth.rsplit("Signature=", 1)[1]


def test_get_object_with_range():
    h = sign_v4("GET", HOST, "/test.txt", {}, {"Range": "bytes=0-9"}, EMPTY_SHA256, AWS, DATE)
    assert _sig(h) == ("host;range;x-amz-content-sha256;x-amz-date",
                       "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    assert h["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,")


def test_put_object():
    body = b"Welcome to Amazon S3."
    import hashlib

    h = sign_v4("PUT", HOST, "/test$file.text", {},
                {"Date": "Fri, 24 May 2013 00:00:00 GMT",
                 "x-amz-storage-class": "REDUCED_REDUNDANCY"},
                hashlib.sha256(body).hexdigest(), AWS, DATE)
    assert _sig(h) == ("date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                       "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")


def test_get_bucket_lifecycle_query():
    h = sign_v4("GET", HOST, "/", {"lifecycle": ""}, {}, EMPTY_SHA256, AWS, DATE)
    assert _sig(h)[1] == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"


def test_list_objects_query_sorted():
    h = sign_v4("GET", HOST, "/", {"prefix": "J", "max-keys": "2"}, {}, EMPTY_SHA256, AWS, DATE)
    assert _sig(h)[1] == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"


def test_session_token_is_signed():
    c = Credentials("AK", "SK", session_token="TOKEN")
    h = sign_v4("GET", "h:9000", "/b/k", {}, {}, EMPTY_SHA256, c, DATE)
    assert h["x-amz-security-token"] == "TOKEN"
    assert "x-amz-security-token" in _sig(h)[0]


def test_credentials_never_print_the_secret():
    assert "wJalr" not in repr(AWS)


@pytest.mark.parametrize("text, endpoint, want", [
    ("s3://bkt/fleet/a", "http://127.0.0.1:8333", Location("http://127.0.0.1:8333", "bkt",
                                                            "fleet/a")),
    ("s3://bkt", "http://h:1", Location("http://h:1", "bkt", "")),
    ("s3://bkt/p/", None, Location("https://s3.us-east-1.amazonaws.com", "bkt", "p")),
    ("http://10.0.0.1:8333/bkt/fleet", None, Location("http://10.0.0.1:8333", "bkt", "fleet")),
    ("https://s3.example:443/bkt", None, Location("https://s3.example:443", "bkt", "")),
])
def test_parse_location(text, endpoint, want, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert parse_location(text, endpoint) == want


@pytest.mark.parametrize("text", ["bkt/fleet", "ftp://h/b", "s3:///p", "http://h:1/"])
def test_parse_location_refuses(text):
    with pytest.raises(InputError):
        parse_location(text, "http://h:1")


def test_location_keys():
    loc = Location("http://h:1", "b", "fleet")
    assert loc.key("status", "b0/status.json") == "fleet/status/b0/status.json"
    assert Location("http://h:1", "b", "").key("desired/all.json") == "desired/all.json"
