"""Stream lifecycle, listing, tags, policies, monitoring and limits through boto3, with requests
spread over the three nodes."""
import time

import pytest
from conftest import ACCOUNT, KEYED, REGION, Cluster, make_client


def arn(name):
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"


def test_create_describe_and_waiters(clients, new_stream):
    c0, c1, c2 = clients
    name = f"lifecycle-{time.time_ns()}"
    c0.create_stream(StreamName=name, ShardCount=3, Tags={"team": "data", "env": "test"})
    first = c1.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
    assert first in ("CREATING", "ACTIVE")
    c2.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    d = c2.describe_stream(StreamName=name)["StreamDescription"]
    assert d["StreamStatus"] == "ACTIVE"
    assert d["StreamARN"] == arn(name)
    assert d["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert d["RetentionPeriodHours"] == 24
    assert d["HasMoreShards"] is False
    assert [s["ShardId"] for s in d["Shards"]] == [f"shardId-00000000000{i}" for i in range(3)]
    ranges = [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"])) for s in d["Shards"]]
    assert ranges[0][0] == 0 and ranges[-1][1] == 2**128 - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:]))
    s = c0.describe_stream_summary(StreamARN=arn(name))["StreamDescriptionSummary"]
    assert s["OpenShardCount"] == 3 and s["StreamName"] == name and s["ConsumerCount"] == 0
    assert s["EncryptionType"] == "NONE" and s["EnhancedMonitoring"] == [{"ShardLevelMetrics": []}]
    assert abs(s["StreamCreationTimestamp"].timestamp() - time.time()) < 120
    # Paginated DescribeStream.
    page = c1.describe_stream(StreamName=name, Limit=2)["StreamDescription"]
    assert len(page["Shards"]) == 2 and page["HasMoreShards"] is True
    rest = c1.describe_stream(StreamName=name, ExclusiveStartShardId=page["Shards"][-1]["ShardId"])["StreamDescription"]
    assert [x["ShardId"] for x in rest["Shards"]] == ["shardId-000000000002"]
    assert {t["Key"]: t["Value"] for t in c1.list_tags_for_stream(StreamName=name)["Tags"]} == {"team": "data", "env": "test"}
    c1.delete_stream(StreamARN=arn(name))
    c0.get_waiter("stream_not_exists").wait(StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    with pytest.raises(c0.exceptions.ResourceNotFoundException):
        c0.describe_stream(StreamName=name)


def test_on_demand_stream_and_limits(clients, new_stream):
    name = new_stream(shards=None, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    s = clients[2].describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert s["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert s["OpenShardCount"] == 4
    limits = clients[1].describe_limits()
    assert limits["OnDemandStreamCount"] >= 1
    assert limits["OpenShardCount"] >= 4
    assert limits["ShardLimit"] > 0 and limits["OnDemandStreamCountLimit"] > 0
    assert clients[0].describe_account_settings()["MinimumThroughputBillingCommitment"]["Status"] == "DISABLED"


def test_list_streams_paginates(clients, new_stream):
    names = [new_stream(shards=1) for _ in range(3)]
    p = clients[1].get_paginator("list_streams")
    seen = []
    pages = 0
    for page in p.paginate(PaginationConfig={"PageSize": 1}):
        pages += 1
        seen += page["StreamNames"]
        for summary in page["StreamSummaries"]:
            assert summary["StreamARN"] == arn(summary["StreamName"])
    assert pages >= 3
    assert set(names) <= set(seen)
    assert seen == sorted(seen)
    one = clients[2].list_streams(Limit=1, ExclusiveStartStreamName=names[0])
    assert one["StreamNames"][0] > names[0]
    token = clients[0].list_streams(Limit=1)["NextToken"]
    nxt = clients[2].list_streams(NextToken=token, Limit=1)
    assert nxt["StreamNames"][0] > seen[0] or len(seen) == 1


def test_list_shards_pagination_and_filters(clients, new_stream):
    name = new_stream(shards=5)
    c = clients[1]
    p = c.get_paginator("list_shards")
    ids = []
    for page in p.paginate(StreamName=name, PaginationConfig={"PageSize": 2}):
        assert len(page["Shards"]) <= 2
        ids += [s["ShardId"] for s in page["Shards"]]
    assert ids == [f"shardId-00000000000{i}" for i in range(5)]
    first = c.list_shards(StreamName=name, MaxResults=2)
    assert "NextToken" in first
    # The token is accepted by another node and carries the stream.
    second = clients[2].list_shards(NextToken=first["NextToken"], MaxResults=2)
    assert [s["ShardId"] for s in second["Shards"]] == ["shardId-000000000002", "shardId-000000000003"]
    after = c.list_shards(StreamName=name, ExclusiveStartShardId="shardId-000000000002")
    assert [s["ShardId"] for s in after["Shards"]] == ["shardId-000000000003", "shardId-000000000004"]
    created = c.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamCreationTimestamp"]
    for f, expect in [
        ({"Type": "AFTER_SHARD_ID", "ShardId": "shardId-000000000003"}, ["shardId-000000000004"]),
        ({"Type": "AT_TRIM_HORIZON"}, ids),
        ({"Type": "FROM_TRIM_HORIZON"}, ids),
        ({"Type": "AT_LATEST"}, ids),
        ({"Type": "AT_TIMESTAMP", "Timestamp": created}, ids),
        ({"Type": "FROM_TIMESTAMP", "Timestamp": time.time()}, ids),
    ]:
        got = [s["ShardId"] for s in clients[0].list_shards(StreamName=name, ShardFilter=f)["Shards"]]
        assert got == expect, f
    by_arn = clients[0].list_shards(StreamARN=arn(name), StreamCreationTimestamp=created)
    assert len(by_arn["Shards"]) == 5


def test_retention_changes(clients, new_stream):
    name = new_stream(shards=1)
    clients[0].increase_stream_retention_period(StreamName=name, RetentionPeriodHours=48)
    assert clients[1].describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["RetentionPeriodHours"] == 48
    clients[2].decrease_stream_retention_period(StreamARN=arn(name), RetentionPeriodHours=24)
    assert clients[0].describe_stream(StreamName=name)["StreamDescription"]["RetentionPeriodHours"] == 24


def test_max_record_size(clients, new_stream):
    name = new_stream(shards=1, MaxRecordSizeInKiB=1024)
    c = clients[0]
    big = b"x" * (1024 * 1024 + 10)
    with pytest.raises(c.exceptions.ClientError) as e:
        c.put_record(StreamName=name, Data=big, PartitionKey="k")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    clients[1].update_max_record_size(StreamARN=arn(name), MaxRecordSizeInKiB=2048)
    assert clients[2].describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["MaxRecordSizeInKiB"] == 2048
    r = c.put_record(StreamName=name, Data=big, PartitionKey="k")
    assert r["ShardId"] == "shardId-000000000000"


def test_tags_on_streams_and_resources(clients, new_stream):
    name = new_stream(shards=1)
    c0, c1, c2 = clients
    c0.add_tags_to_stream(StreamName=name, Tags={"a": "1", "b": "2", "c": "3"})
    page = c1.list_tags_for_stream(StreamName=name, Limit=2)
    assert [t["Key"] for t in page["Tags"]] == ["a", "b"] and page["HasMoreTags"] is True
    page = c1.list_tags_for_stream(StreamName=name, ExclusiveStartTagKey="b")
    assert page["Tags"] == [{"Key": "c", "Value": "3"}] and page["HasMoreTags"] is False
    c2.remove_tags_from_stream(StreamName=name, TagKeys=["a"])
    c0.tag_resource(ResourceARN=arn(name), Tags={"d": "4", "b": "20"})
    tags = {t["Key"]: t["Value"] for t in c1.list_tags_for_resource(ResourceARN=arn(name))["Tags"]}
    assert tags == {"b": "20", "c": "3", "d": "4"}
    c2.untag_resource(ResourceARN=arn(name), TagKeys=["b", "c"])
    assert c0.list_tags_for_stream(StreamARN=arn(name))["Tags"] == [{"Key": "d", "Value": "4"}]
    # At most 50 tags per stream.
    c0.add_tags_to_stream(StreamName=name, Tags={f"k{i}": "v" for i in range(49)})
    with pytest.raises(c0.exceptions.InvalidArgumentException):
        c0.add_tags_to_stream(StreamName=name, Tags={"one-too-many": "v"})
    assert len(c1.list_tags_for_stream(StreamName=name, Limit=50)["Tags"]) == 50


def test_configured_tag_limit():
    # `[limits] max_tags` lowers the per-stream tag limit on CreateStream and AddTagsToStream.
    node = Cluster(1, KEYED + "[limits]\nmax_tags = 3\n", name="tags")
    try:
        c = make_client(node.endpoint(0))
        with pytest.raises(c.exceptions.InvalidArgumentException):
            c.create_stream(StreamName="too-many", ShardCount=1, Tags={f"k{i}": "v" for i in range(4)})
        c.create_stream(StreamName="tagged", ShardCount=1, Tags={"a": "1", "b": "2"})
        c.get_waiter("stream_exists").wait(StreamName="tagged", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        # Replacing an existing key does not count as a new tag.
        c.add_tags_to_stream(StreamName="tagged", Tags={"a": "10", "c": "3"})
        with pytest.raises(c.exceptions.InvalidArgumentException):
            c.add_tags_to_stream(StreamName="tagged", Tags={"d": "4"})
        tags = {t["Key"]: t["Value"] for t in c.list_tags_for_stream(StreamName="tagged")["Tags"]}
        assert tags == {"a": "10", "b": "2", "c": "3"}
    finally:
        node.stop()


def test_resource_policies(clients, new_stream):
    name = new_stream(shards=1)
    policy = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kinesis:GetRecords","Resource":"%s"}]}' % arn(name)
    assert clients[0].get_resource_policy(ResourceARN=arn(name))["Policy"] == "{}"
    clients[1].put_resource_policy(ResourceARN=arn(name), Policy=policy)
    assert clients[2].get_resource_policy(ResourceARN=arn(name))["Policy"] == policy
    clients[0].delete_resource_policy(ResourceARN=arn(name))
    assert clients[1].get_resource_policy(ResourceARN=arn(name))["Policy"] == "{}"
    with pytest.raises(clients[0].exceptions.ResourceNotFoundException):
        clients[0].delete_resource_policy(ResourceARN=arn(name))
    with pytest.raises(clients[0].exceptions.InvalidArgumentException):
        clients[0].put_resource_policy(ResourceARN=arn(name), Policy="not json")


def test_enhanced_monitoring(clients, new_stream):
    name = new_stream(shards=1)
    r = clients[0].enable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["IncomingBytes", "OutgoingRecords"])
    assert r["CurrentShardLevelMetrics"] == [] and r["DesiredShardLevelMetrics"] == ["IncomingBytes", "OutgoingRecords"]
    assert r["StreamARN"] == arn(name)
    d = clients[1].describe_stream(StreamName=name)["StreamDescription"]
    assert d["EnhancedMonitoring"] == [{"ShardLevelMetrics": ["IncomingBytes", "OutgoingRecords"]}]
    r = clients[2].disable_enhanced_monitoring(StreamARN=arn(name), ShardLevelMetrics=["IncomingBytes"])
    assert r["DesiredShardLevelMetrics"] == ["OutgoingRecords"]
    r = clients[2].enable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["ALL"])
    assert len(r["DesiredShardLevelMetrics"]) == 7
    s = clients[0].describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert len(s["EnhancedMonitoring"][0]["ShardLevelMetrics"]) == 7


def test_unsupported_operations_name_the_capability(kinesis, new_stream):
    name = new_stream(shards=1)
    for call, capability in [
        (lambda: kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey="1000"), "resharding"),
        (lambda: kinesis.register_stream_consumer(StreamARN=arn(name), ConsumerName="c"), "enhanced fan-out"),
        (lambda: kinesis.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId="alias/aws/kinesis"), "encryption at rest"),
        (lambda: kinesis.update_stream_mode(StreamARN=arn(name), StreamModeDetails={"StreamMode": "ON_DEMAND"}), "on-demand"),
    ]:
        with pytest.raises(kinesis.exceptions.ClientError) as e:
            call()
        err = e.value.response["Error"]
        assert err["Code"] == "UnsupportedOperationException"
        assert capability in err["Message"]
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
