"""Monitoring: every metric the Grafana dashboard and the alert rules use exists in the nodes'
/metrics output; promtool accepts the rules and the Prometheus configuration; a real Prometheus
server scraping a 3-node cluster under load sees the series arrive (queried over its HTTP API).
"""
import concurrent.futures
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import boto3
import botocore.config
import pytest

from conftest import ACCESS_KEY, REGION, SECRET_KEY

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DASHBOARD = os.path.join(ROOT, "cluster", "grafana", "runnel.json")
ALERTS = os.path.join(ROOT, "cluster", "prometheus", "alerts.yml")
PROM_CONFIG = os.path.join(ROOT, "cluster", "prometheus", "prometheus.yml")


def scrape(cluster):
    """Union of every node's /metrics: {family: type} and the set of series names."""
    families, series = {}, set()
    for port in cluster.http:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                families[name] = kind
            elif line and not line.startswith("#"):
                series.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return families, series


def used_metrics():
    text = open(DASHBOARD).read() + open(ALERTS).read()
    return sorted(set(re.findall(r"\brunnel_[a-z0-9_]+", text)))


def traffic(kinesis, name):
    """Puts, reads, a write throttle and a read throttle on `name` (enhanced monitoring on)."""
    kinesis.enable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["ALL"])
    shard = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
    kinesis.put_record(StreamName=name, Data=b"one", PartitionKey="k", ExplicitHashKey="0")
    # 6 concurrent batches of 500 records to one shard: 3000 records at once against a bucket of
    # 1000 records (one second of the limit), so some are refused.
    def batch(_):
        r = kinesis.put_records(
            StreamName=name,
            Records=[{"Data": b"x" * 100, "PartitionKey": "k", "ExplicitHashKey": "0"}] * 500,
        )
        return sum(
            1 for e in r["Records"] if e.get("ErrorCode") == "ProvisionedThroughputExceededException"
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        throttled = sum(pool.map(batch, range(6)))
    assert throttled > 0
    it = kinesis.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    # No client retries, so refused calls surface.
    raw = boto3.client(
        "kinesis",
        endpoint_url=kinesis.meta.endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=botocore.config.Config(
            parameter_validation=False, retries={"max_attempts": 1, "mode": "standard"}
        ),
    )

    def one(_):
        try:
            raw.get_records(ShardIterator=it, Limit=100)
            return 0
        except raw.exceptions.ProvisionedThroughputExceededException:
            return 1

    # 20 concurrent calls on one shard: at most 5 a second are admitted.
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        refused = sum(pool.map(one, range(20)))
    assert refused > 0
    return shard


def test_dashboard_and_alert_metrics_exist(cluster, kinesis, new_stream):
    name = new_stream(shards=2)
    traffic(kinesis, name)
    used = used_metrics()
    assert len(used) > 25, used
    deadline = time.time() + 30
    while True:
        families, series = scrape(cluster)
        missing = []
        for m in used:
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            if m not in series and not (base != m and families.get(base) == "histogram"):
                missing.append(m)
        # Gauges refreshed by the nodes' metrics loops (storage every 5 s) may lag a little.
        if not missing or time.time() > deadline:
            break
        time.sleep(1)
    assert not missing, f"metrics used by the dashboard or alerts but not exported: {missing}"


def test_stream_metrics_count_what_was_done(cluster, kinesis, new_stream):
    name = new_stream(shards=1)
    for i in range(7):
        kinesis.put_record(StreamName=name, Data=b"abc", PartitionKey=f"k{i}")
    total = 0
    for port in cluster.http:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(f'runnel_stream_incoming_records_total{{stream="{name}"}}'):
                    total += int(float(line.split()[-1]))
    assert total == 7


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_rules_and_config():
    out = subprocess.run(["promtool", "check", "rules", ALERTS], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "8 rules found" in out.stdout
    out = subprocess.run(["promtool", "check", "config", PROM_CONFIG], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prom_query(port, query):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")
def test_prometheus_scrapes_a_cluster_under_load(cluster, kinesis, new_stream):
    name = new_stream(shards=2)
    tmp = tempfile.mkdtemp(prefix="runnel-prom-")
    port = free_port()
    targets = ", ".join(f'"127.0.0.1:{p}"' for p in cluster.http)
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {os.path.abspath(ALERTS)}\n"
            f"scrape_configs:\n  - job_name: runnel\n    static_configs:\n      - targets: [{targets}]\n"
        )
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={os.path.join(tmp, 'data')}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=open(os.path.join(tmp, "prometheus.log"), "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        written = 0
        deadline = time.time() + 90
        seen = None
        while time.time() < deadline:
            # Load: PutRecords batches across both shards.
            r = kinesis.put_records(
                StreamName=name,
                Records=[{"Data": b"y" * 200, "PartitionKey": f"p{i}"} for i in range(50)],
            )
            written += 50 - r["FailedRecordCount"]
            try:
                up = prom_query(port, 'up{job="runnel"}')
                got = prom_query(port, f'sum(runnel_stream_incoming_records_total{{stream="{name}"}})')
                led = prom_query(port, "sum(runnel_raft_groups_led)")
            except OSError:
                time.sleep(0.5)
                continue
            if got and len(up) == 3 and all(s["value"][1] == "1" for s in up):
                seen = float(got[0]["value"][1])
                # The series keeps up with the load: at least what was written 2 scrapes ago.
                if seen >= 500 and led and float(led[0]["value"][1]) >= 3:
                    break
            time.sleep(0.5)
        assert seen is not None and seen >= 500, f"Prometheus saw {seen} of {written} records"
        assert seen <= written
        rules = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5))
        names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert "RunnelNodeDown" in names and "RunnelShardWithoutLeader" in names
        # The healthy cluster fires no node-down or leaderless alert.
        alerts = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5))
        firing = {a["labels"]["alertname"] for a in alerts["data"]["alerts"] if a["state"] == "firing"}
        assert not firing & {"RunnelNodeDown", "RunnelShardWithoutLeader"}, firing
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=10)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
        shutil.rmtree(tmp, ignore_errors=True)
