"""PutRecord/PutRecords/GetShardIterator/GetRecords through boto3 against different nodes:
every record read back exactly once in order, every iterator type, partial failures."""
import time

import pytest
from conftest import ACCOUNT, REGION

HALF = 2**127


def arn(name):
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"


def read_all(client, name, shard_id, it_type="TRIM_HORIZON", **kw):
    it = client.get_shard_iterator(StreamName=name, ShardId=shard_id, ShardIteratorType=it_type, **kw)["ShardIterator"]
    out = []
    for _ in range(50):
        r = client.get_records(ShardIterator=it, Limit=1000)
        out += r["Records"]
        assert r["NextShardIterator"]
        it = r["NextShardIterator"]
        if not r["Records"] and r["MillisBehindLatest"] == 0:
            break
    return out


def test_writes_through_every_node_are_read_back_exactly_once_in_order(clients, new_stream):
    name = new_stream(shards=3)
    written = {}  # seq -> (key, data)
    for i in range(60):
        c = clients[i % 3]
        key = f"key-{i % 7}"
        data = f"single-{i}".encode()
        r = c.put_record(StreamName=name, PartitionKey=key, Data=data)
        written[r["SequenceNumber"]] = (r["ShardId"], key, data)
    for b in range(4):
        c = clients[(b + 1) % 3]
        entries = [{"PartitionKey": f"key-{j % 7}", "Data": f"batch-{b}-{j}".encode()} for j in range(50)]
        r = c.put_records(StreamARN=arn(name), Records=entries)
        assert r["FailedRecordCount"] == 0
        for e, res in zip(entries, r["Records"]):
            written[res["SequenceNumber"]] = (res["ShardId"], e["PartitionKey"], e["Data"])
    assert len(written) == 260
    got = {}
    for shard in clients[0].list_shards(StreamName=name)["Shards"]:
        recs = read_all(clients[2], name, shard["ShardId"])
        seqs = [int(r["SequenceNumber"]) for r in recs]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        for r in recs:
            assert r["SequenceNumber"] not in got
            got[r["SequenceNumber"]] = (shard["ShardId"], r["PartitionKey"], r["Data"])
            assert r["EncryptionType"] == "NONE"
            assert abs(r["ApproximateArrivalTimestamp"].timestamp() - time.time()) < 300
    assert got == written
    # Same key -> same shard.
    shards_of_key = {}
    for shard, key, _ in written.values():
        shards_of_key.setdefault(key, set()).add(shard)
    assert all(len(s) == 1 for s in shards_of_key.values())


def test_every_iterator_type(clients, new_stream):
    name = new_stream(shards=1)
    c = clients[1]
    seqs = []
    for i in range(10):
        if i == 5:
            # boto3 sends timestamps in whole seconds: records 5.. start after a second boundary.
            time.sleep(1.05 - time.time() % 1)
            boundary = int(time.time())
        seqs.append(c.put_record(StreamName=name, PartitionKey="k", Data=bytes([i]))["SequenceNumber"])
    shard = "shardId-000000000000"
    assert [r["Data"] for r in read_all(clients[0], name, shard)] == [bytes([i]) for i in range(10)]
    at = read_all(clients[2], name, shard, "AT_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[4])
    assert [r["SequenceNumber"] for r in at] == seqs[4:]
    after = read_all(clients[0], name, shard, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[4])
    assert [r["SequenceNumber"] for r in after] == seqs[5:]
    by_time = read_all(clients[1], name, shard, "AT_TIMESTAMP", Timestamp=boundary)
    assert [r["SequenceNumber"] for r in by_time] == seqs[5:]
    future = read_all(clients[1], name, shard, "AT_TIMESTAMP", Timestamp=time.time() + 3600)
    assert future == []
    # LATEST: nothing now, then exactly what is written afterwards.
    it = clients[2].get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
    r = clients[2].get_records(ShardIterator=it)
    assert r["Records"] == [] and r["MillisBehindLatest"] == 0
    new = c.put_record(StreamName=name, PartitionKey="k", Data=b"after-latest")["SequenceNumber"]
    r = clients[0].get_records(ShardIterator=r["NextShardIterator"])
    assert [x["SequenceNumber"] for x in r["Records"]] == [new]
    # Limit pages the shard and keeps a fresh iterator on every call.
    it = clients[0].get_shard_iterator(StreamARN=arn(name), ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    r = clients[0].get_records(ShardIterator=it, Limit=3)
    assert len(r["Records"]) == 3 and r["MillisBehindLatest"] >= 0
    r2 = clients[1].get_records(ShardIterator=r["NextShardIterator"], Limit=3)
    assert r2["Records"][0]["SequenceNumber"] == seqs[3]
    # A shard's starting sequence number is accepted even though no record carries it.
    start = clients[0].list_shards(StreamName=name)["Shards"][0]["SequenceNumberRange"]["StartingSequenceNumber"]
    from_start = read_all(clients[0], name, shard, "AT_SEQUENCE_NUMBER", StartingSequenceNumber=start)
    assert from_start[0]["SequenceNumber"] == seqs[0]


def test_explicit_hash_keys_and_binary_data(clients, new_stream):
    name = new_stream(shards=2)
    c = clients[0]
    low = c.put_record(StreamName=name, PartitionKey="p", Data=b"\x00\xff\x10", ExplicitHashKey="0")
    high = c.put_record(StreamName=name, PartitionKey="p", Data=b"\x01", ExplicitHashKey=str(2**128 - 1))
    assert low["ShardId"] == "shardId-000000000000" and high["ShardId"] == "shardId-000000000001"
    recs = read_all(clients[1], name, "shardId-000000000000")
    assert recs[0]["Data"] == b"\x00\xff\x10"
    prev = c.put_record(StreamName=name, PartitionKey="p", Data=b"a", ExplicitHashKey="5")
    nxt = c.put_record(StreamName=name, PartitionKey="p", Data=b"b", ExplicitHashKey="5", SequenceNumberForOrdering=prev["SequenceNumber"])
    assert int(nxt["SequenceNumber"]) > int(prev["SequenceNumber"])


def test_put_records_partial_failure(clients, new_stream):
    """One PutRecords spanning two shards: the entries for a shard over its write limit fail with
    ProvisionedThroughputExceededException, the others are written; nothing failed is stored."""
    name = new_stream(shards=2)
    c = clients[2]
    # Drain shard 0's one-second burst (1 MiB), then send it more than the refill in one call.
    big = [{"PartitionKey": "a", "Data": b"x" * 4000, "ExplicitHashKey": "1"} for _ in range(300)]
    c.put_records(StreamName=name, Records=big)
    small = [{"PartitionKey": "b", "Data": f"ok-{i}".encode(), "ExplicitHashKey": str(HALF + i)} for i in range(10)]
    r = c.put_records(StreamName=name, Records=big + small)
    assert r["FailedRecordCount"] == 300
    for res in r["Records"][:300]:
        assert res["ErrorCode"] == "ProvisionedThroughputExceededException"
        assert "Rate exceeded for shard shardId-000000000000" in res["ErrorMessage"]
        assert "SequenceNumber" not in res
    for res in r["Records"][300:]:
        assert res["ShardId"] == "shardId-000000000001" and res["SequenceNumber"]
    assert [x["Data"] for x in read_all(clients[0], name, "shardId-000000000001")] == [e["Data"] for e in small]
    # Only the first (admitted) batch is on shard 0.
    assert len(read_all(clients[1], name, "shardId-000000000000")) == 300


def test_request_ids_on_success_and_error(kinesis):
    ok = kinesis.list_streams()
    rid = ok["ResponseMetadata"]["RequestId"]
    assert len(rid) == 36 and ok["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"] == rid
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException) as e:
        kinesis.describe_stream(StreamName="does-not-exist")
    assert len(e.value.response["ResponseMetadata"]["RequestId"]) == 36
