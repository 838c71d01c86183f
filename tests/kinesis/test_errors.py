"""Bad inputs: each answered with AWS's exception name and message wording (the client's own
parameter validation is off, so every check here is the server's), and nothing changed."""
import json
import urllib.request

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from conftest import ACCESS_KEY, ACCOUNT, REGION, SECRET_KEY

PATTERN = "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"


def v1(value, path, constraint):
    return f"1 validation error detected: Value {value} at '{path}' failed to satisfy constraint: {constraint}"


def error_of(call):
    with pytest.raises(Exception) as e:
        call()
    err = e.value.response["Error"]
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 403)
    return err["Code"], err["Message"]


@pytest.fixture(scope="module")
def stream(clients):
    name = "errors-stream"
    clients[0].create_stream(StreamName=name, ShardCount=2)
    clients[0].get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    yield name
    clients[0].delete_stream(StreamName=name)


def cases(s, seq_other_shard):
    long_name = "a" * 129
    return [
        # ValidationException from the service model's constraints.
        (lambda c: c.describe_stream_summary(StreamName=""), "ValidationException",
         f"2 validation errors detected: Value '' at 'streamName' failed to satisfy constraint: {PATTERN}; "
         "Value '' at 'streamName' failed to satisfy constraint: Member must have length greater than or equal to 1"),
        (lambda c: c.create_stream(StreamName=long_name, ShardCount=1), "ValidationException",
         v1(f"'{long_name}'", "streamName", "Member must have length less than or equal to 128")),
        (lambda c: c.create_stream(StreamName="bad name!", ShardCount=1), "ValidationException",
         v1("'bad name!'", "streamName", PATTERN)),
        (lambda c: c.create_stream(StreamName="x", ShardCount=0), "ValidationException",
         v1("'0'", "shardCount", "Member must have value greater than or equal to 1")),
        (lambda c: c.create_stream(StreamName="", ShardCount=0), "ValidationException",
         f"3 validation errors detected: Value '' at 'streamName' failed to satisfy constraint: {PATTERN}; "
         "Value '' at 'streamName' failed to satisfy constraint: Member must have length greater than or equal to 1; "
         "Value '0' at 'shardCount' failed to satisfy constraint: Member must have value greater than or equal to 1"),
        (lambda c: c.put_record(StreamName=s, PartitionKey="", Data=b"x"), "ValidationException",
         v1("''", "partitionKey", "Member must have length greater than or equal to 1")),
        (lambda c: c.put_record(StreamName=s, PartitionKey="k" * 257, Data=b"x"), "ValidationException",
         v1("'" + "k" * 257 + "'", "partitionKey", "Member must have length less than or equal to 256")),
        (lambda c: c.put_records(StreamName=s, Records=[]), "ValidationException",
         v1("'[]'", "records", "Member must have length greater than or equal to 1")),
        (lambda c: c.put_records(StreamName=s, Records=[{"PartitionKey": "k", "Data": b"x"}, {"PartitionKey": "", "Data": b"y"}]),
         "ValidationException", v1("''", "records.2.member.partitionKey", "Member must have length greater than or equal to 1")),
        (lambda c: c.get_shard_iterator(StreamName=s, ShardId="shardId-000000000000", ShardIteratorType="BOGUS"),
         "ValidationException",
         v1("'BOGUS'", "shardIteratorType", "Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]")),
        (lambda c: c.get_records(ShardIterator="x", Limit=0), "ValidationException",
         v1("'0'", "limit", "Member must have value greater than or equal to 1")),
        (lambda c: c.get_records(ShardIterator="x", Limit=10001), "ValidationException",
         v1("'10001'", "limit", "Member must have value less than or equal to 10000")),
        (lambda c: c.put_record(StreamName=s, PartitionKey="k", Data=b"x", ExplicitHashKey="-1"), "ValidationException",
         v1("'-1'", "explicitHashKey", "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})")),
        (lambda c: c.put_record(StreamName=s, PartitionKey="k", Data=b"x" * (1024 * 1024 + 1)), "ValidationException",
         v1("'java.nio.HeapByteBuffer[pos=0 lim=1048577 cap=1048577]'", "data", "Member must have length less than or equal to 1048576")),
        (lambda c: c.increase_stream_retention_period(StreamName=s), "ValidationException",
         v1("null", "retentionPeriodHours", "Member must not be null")),
        # Semantic errors.
        (lambda c: c.describe_stream(StreamName="no-such-stream"), "ResourceNotFoundException",
         f"Stream no-such-stream under account {ACCOUNT} not found."),
        (lambda c: c.delete_stream(StreamName="no-such-stream"), "ResourceNotFoundException",
         f"Stream no-such-stream under account {ACCOUNT} not found."),
        (lambda c: c.create_stream(StreamName=s, ShardCount=1), "ResourceInUseException",
         f"Stream {s} under account {ACCOUNT} already exists."),
        (lambda c: c.get_shard_iterator(StreamName=s, ShardId="shardId-000000000099", ShardIteratorType="LATEST"),
         "ResourceNotFoundException", f"Shard shardId-000000000099 in stream {s} under account {ACCOUNT} does not exist"),
        (lambda c: c.get_shard_iterator(StreamName=s, ShardId="shardId-000000000000", ShardIteratorType="AT_SEQUENCE_NUMBER"),
         "InvalidArgumentException", "StartingSequenceNumber must be specified for ShardIteratorType AT_SEQUENCE_NUMBER"),
        (lambda c: c.get_shard_iterator(StreamName=s, ShardId="shardId-000000000000", ShardIteratorType="AT_TIMESTAMP"),
         "InvalidArgumentException", "Timestamp must be specified for ShardIteratorType AT_TIMESTAMP"),
        (lambda c: c.get_shard_iterator(StreamName=s, ShardId="shardId-000000000000", ShardIteratorType="AT_SEQUENCE_NUMBER",
                                        StartingSequenceNumber=seq_other_shard), "InvalidArgumentException", None),
        (lambda c: c.increase_stream_retention_period(StreamName=s, RetentionPeriodHours=8761), "InvalidArgumentException",
         "Maximum allowed retention period is 8760 hours. Requested retention period (8761 hours) is too long."),
        (lambda c: c.decrease_stream_retention_period(StreamName=s, RetentionPeriodHours=12), "InvalidArgumentException",
         "Minimum allowed retention period is 24 hours. Requested retention period (12 hours) is too short."),
        (lambda c: c.decrease_stream_retention_period(StreamName=s, RetentionPeriodHours=48), "InvalidArgumentException",
         f"Requested retention period (48 hours) for stream {s} can not be longer than existing retention period (24 hours). Use IncreaseRetentionPeriod API."),
        (lambda c: c.get_records(ShardIterator="not-an-iterator"), "InvalidArgumentException", None),
        (lambda c: c.list_shards(StreamName=s, NextToken="garbage"), "InvalidArgumentException", None),
        (lambda c: c.list_shards(NextToken="garbage-token"), "InvalidArgumentException", None),
        (lambda c: c.put_record(StreamName=s, PartitionKey="k", Data=b"x", ExplicitHashKey=str(2**128)),
         "InvalidArgumentException", None),
        (lambda c: c.describe_stream_summary(StreamARN=f"arn:aws:kinesis:eu-west-9:{ACCOUNT}:stream/{s}"),
         "ResourceNotFoundException", None),
        (lambda c: c.merge_shards(StreamName=s, ShardToMerge="shardId-000000000000", AdjacentShardToMerge="shardId-000000000001"),
         "UnsupportedOperationException", None),
    ]


def test_bad_inputs_give_aws_errors_on_every_node(clients, stream):
    other = clients[0].put_record(StreamName=stream, PartitionKey="k", Data=b"x", ExplicitHashKey=str(2**128 - 1))
    assert other["ShardId"] == "shardId-000000000001"
    before = clients[0].describe_stream(StreamName=stream)["StreamDescription"]
    all_cases = cases(stream, other["SequenceNumber"])
    assert len(all_cases) >= 20
    names = set()
    for i, (call, code, message) in enumerate(all_cases):
        got_code, got_message = error_of(lambda: call(clients[i % 3]))
        assert got_code == code, (i, got_code, got_message)
        if message is not None:
            assert got_message == message, (i, got_message)
        else:
            assert got_message, i
        names.add(got_code)
    assert len(names) >= 5
    after = clients[1].describe_stream(StreamName=stream)["StreamDescription"]
    assert after == before, "a rejected request changed the stream"
    # Nothing but the one good record was written.
    shard1 = clients[2].get_shard_iterator(StreamName=stream, ShardId="shardId-000000000001", ShardIteratorType="TRIM_HORIZON")
    assert len(clients[2].get_records(ShardIterator=shard1["ShardIterator"])["Records"]) == 1
    shard0 = clients[2].get_shard_iterator(StreamName=stream, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")
    assert clients[2].get_records(ShardIterator=shard0["ShardIterator"])["Records"] == []


def raw(cluster, target, body, content_type="application/x-amz-json-1.1", node=0, sign=True):
    req = AWSRequest(method="POST", url=cluster.endpoint(node) + "/", data=body,
                     headers={"Content-Type": content_type, "X-Amz-Target": target})
    if sign:
        SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "kinesis", REGION).add_auth(req)
    prepared = req.prepare()
    r = urllib.request.Request(prepared.url, data=prepared.body, headers=dict(prepared.headers), method="POST")
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_protocol_level_errors(cluster):
    status, headers, body = raw(cluster, "Kinesis_20131202.NoSuchAction", b"{}")
    assert status == 400 and json.loads(body)["__type"] == "UnknownOperationException"
    assert len(headers["x-amzn-RequestId"]) == 36
    status, _, body = raw(cluster, "Kinesis_20131202.ListStreams", b"{not json", node=1)
    assert status == 400 and json.loads(body)["__type"] == "SerializationException"
    status, _, body = raw(cluster, "Kinesis_20131202.PutRecord",
                          b'{"StreamName":"s","PartitionKey":"k","Data":"not base64!"}', node=2)
    assert status == 400 and json.loads(body)["__type"] == "SerializationException"
    status, _, body = raw(cluster, "Kinesis_20131202.CreateStream", b'{"StreamName":"s","ShardCount":"two"}')
    err = json.loads(body)
    assert status == 400 and err["__type"] == "SerializationException"
    assert err["message"] == "class java.lang.String can not be converted to an Integer"
