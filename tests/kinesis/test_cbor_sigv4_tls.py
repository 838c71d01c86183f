"""CBOR bodies built by hand (cbor2), SigV4 acceptance and rejection, development mode, HTTPS with
HTTP/2."""
import datetime
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from unittest import mock

import botocore.auth
import cbor2
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from conftest import ACCESS_KEY, REGION, SECRET_KEY, Cluster, make_client, runnel_bin

CBOR = "application/x-amz-cbor-1.1"


def send(url, target, body, content_type="application/x-amz-json-1.1", signer=None, tamper=None, query_auth=False):
    req = AWSRequest(method="POST", url=url + "/", data=body,
                     headers={"Content-Type": content_type, "X-Amz-Target": target})
    if signer is not None:
        signer.add_auth(req)
    prepared = req.prepare()
    data = prepared.body if tamper is None else tamper
    if isinstance(data, str):
        data = data.encode()
    r = urllib.request.Request(prepared.url, data=data, headers=dict(prepared.headers), method="POST")
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def good_signer():
    return SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "kinesis", REGION)


def test_cbor_put_get_describe_and_error(cluster, new_stream):
    name = new_stream(shards=1)
    url = cluster.endpoint(1)
    payload = bytes(range(256)) * 3
    status, headers, body = send(url, "Kinesis_20131202.PutRecord",
                                 cbor2.dumps({"StreamName": name, "PartitionKey": "cbor-key", "Data": payload}),
                                 CBOR, good_signer())
    assert status == 200, body
    assert headers["Content-Type"] == CBOR
    put = cbor2.loads(body)
    assert put["ShardId"] == "shardId-000000000000" and put["SequenceNumber"].isdigit()

    status, _, body = send(cluster.endpoint(2), "Kinesis_20131202.GetShardIterator",
                           cbor2.dumps({"StreamName": name, "ShardId": "shardId-000000000000",
                                        "ShardIteratorType": "AT_SEQUENCE_NUMBER",
                                        "StartingSequenceNumber": put["SequenceNumber"]}), CBOR, good_signer())
    assert status == 200, body
    iterator = cbor2.loads(body)["ShardIterator"]
    status, _, body = send(url, "Kinesis_20131202.GetRecords", cbor2.dumps({"ShardIterator": iterator}), CBOR, good_signer())
    assert status == 200, body
    got = cbor2.loads(body)
    rec = got["Records"][0]
    assert rec["Data"] == payload and isinstance(rec["Data"], bytes)
    assert rec["PartitionKey"] == "cbor-key" and rec["SequenceNumber"] == put["SequenceNumber"]
    assert isinstance(rec["ApproximateArrivalTimestamp"], datetime.datetime)
    assert abs(rec["ApproximateArrivalTimestamp"].timestamp() - time.time()) < 300
    assert got["MillisBehindLatest"] == 0 and got["NextShardIterator"]

    status, _, body = send(cluster.endpoint(0), "Kinesis_20131202.DescribeStreamSummary",
                           cbor2.dumps({"StreamName": name}), CBOR, good_signer())
    summary = cbor2.loads(body)["StreamDescriptionSummary"]
    assert summary["StreamName"] == name and summary["StreamStatus"] == "ACTIVE" and summary["OpenShardCount"] == 1
    assert isinstance(summary["StreamCreationTimestamp"], datetime.datetime)

    status, headers, body = send(url, "Kinesis_20131202.DescribeStreamSummary",
                                 cbor2.dumps({"StreamName": "missing-cbor-stream"}), CBOR, good_signer())
    err = cbor2.loads(body)
    assert status == 400 and headers["Content-Type"] == CBOR
    assert err == {"__type": "ResourceNotFoundException",
                   "message": "Stream missing-cbor-stream under account 000000000000 not found."}
    status, _, body = send(url, "Kinesis_20131202.ListStreams", b"\xff\x00garbage", CBOR, good_signer())
    assert status == 400 and cbor2.loads(body)["__type"] == "SerializationException"


def test_sigv4_accepts_good_signatures_and_rejects_bad_ones(cluster):
    url = cluster.endpoint(0)
    target, body = "Kinesis_20131202.ListStreams", b'{"Limit": 5}'
    status, _, resp = send(url, target, body, signer=good_signer())
    assert status == 200, resp

    def rejected(expect, **kw):
        status, headers, resp = send(url, target, body, **kw)
        err = json.loads(resp)
        assert (status, err["__type"]) == (403, expect), resp
        assert len(headers["x-amzn-RequestId"]) == 36
        return err["message"]

    msg = rejected("InvalidSignatureException", signer=SigV4Auth(Credentials(ACCESS_KEY, "wrong-secret"), "kinesis", REGION))
    assert msg.startswith("The request signature we calculated does not match")
    rejected("InvalidSignatureException", signer=good_signer(), tamper=b'{"Limit": 6}')
    stale = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=stale):
        msg = rejected("InvalidSignatureException", signer=good_signer())
    assert msg.startswith("Signature expired: ")
    rejected("MissingAuthenticationTokenException")
    rejected("UnrecognizedClientException", signer=SigV4Auth(Credentials("AKIDUNKNOWN", SECRET_KEY), "kinesis", REGION))
    # Presigned (query-string) form.
    status, _, resp = send(url, target, body, signer=SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET_KEY), "kinesis", REGION, expires=300))
    assert status == 200, resp
    # boto3 itself with a wrong secret.
    bad = make_client(url, secret="nope")
    with pytest.raises(bad.exceptions.ClientError) as e:
        bad.list_streams()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_development_mode_https_and_http2():
    """A single node with no keys (development mode) serving HTTPS with a `runnel cert`
    certificate: boto3 with any key over TLS, curl over HTTP/2."""
    certs = tempfile.mkdtemp(prefix="runnel-cert-")
    try:
        subprocess.run([runnel_bin(), "cert", "--out", certs], check=True, capture_output=True)
        tls = f'[tls]\ncert = "{certs}/cert.pem"\nkey = "{certs}/key.pem"\n'
        node = Cluster(1, tls, name="tls")
        try:
            url = node.endpoint(0)
            c = make_client(url, key="anything", secret="whatever", verify=f"{certs}/cert.pem")
            c.create_stream(StreamName="tls-stream", ShardCount=1)
            c.get_waiter("stream_exists").wait(StreamName="tls-stream", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
            r = c.put_record(StreamName="tls-stream", PartitionKey="k", Data=b"over tls")
            assert r["ShardId"] == "shardId-000000000000"
            if shutil.which("curl"):
                out = subprocess.run(
                    ["curl", "-sS", "--http2", "--cacert", f"{certs}/cert.pem", "-o", "/dev/null",
                     "-w", "%{http_version} %{http_code}", "-X", "POST", url + "/",
                     "-H", "Content-Type: application/x-amz-json-1.1",
                     "-H", "X-Amz-Target: Kinesis_20131202.ListStreams", "-d", "{}"],
                    check=True, capture_output=True, text=True, timeout=30)
                assert out.stdout == "2 200", out
            # Unsigned requests are fine in development mode.
            ctx = ssl.create_default_context(cafile=f"{certs}/cert.pem")
            req = urllib.request.Request(url + "/", data=b"{}", method="POST", headers={
                "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Kinesis_20131202.ListStreams"})
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                assert resp.status == 200 and json.loads(resp.read())["StreamNames"] == ["tls-stream"]
        finally:
            node.stop()
    finally:
        shutil.rmtree(certs, ignore_errors=True)
