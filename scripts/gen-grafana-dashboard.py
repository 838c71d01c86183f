#!/usr/bin/env python3
"""Writes cluster/grafana/runnel.json, the Grafana dashboard of a Runnel cluster.

Rows: cluster overview, per-stream throughput and latency, consumer lag, Raft health, storage,
process. Every query uses the metrics of docs/monitoring.md; tests/kinesis/test_monitoring.py
checks that each metric it names exists in a running cluster's /metrics.
Run: python3 scripts/gen-grafana-dashboard.py
"""
import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}
STREAM = 'stream=~"$stream"'

panels = []
next_id = [1]
y = [0]


def row(title):
    panels.append({"type": "row", "title": title, "id": next_id[0], "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
    next_id[0] += 1
    y[0] += 1


def panel(title, targets, unit="short", x=0, w=8, h=8, kind="timeseries", desc=""):
    p = {
        "type": kind,
        "title": title,
        "description": desc,
        "id": next_id[0],
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y[0]},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(65 + i)}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
    next_id[0] += 1
    panels.append(p)
    if x + w >= 24:
        y[0] += h


def q(hist, by, quantile, extra=""):
    sel = "{" + extra + "}" if extra else ""
    return (f"histogram_quantile({quantile}, sum by (le{', ' + by if by else ''}) "
            f"(rate({hist}_bucket{sel}[$__rate_interval])))")


row("Cluster overview")
panel("Nodes up", [('sum(up{job="runnel"})', "nodes up")], kind="stat", x=0, w=4, h=4)
panel("Groups without leader", [("sum(runnel_raft_groups_without_leader)", "leaderless")],
      kind="stat", x=4, w=4, h=4)
panel("Under-replicated groups", [("sum(runnel_raft_groups_under_replicated)", "under-replicated")],
      kind="stat", x=8, w=4, h=4)
panel("Incoming records/s", [("sum(rate(runnel_stream_incoming_records_total[$__rate_interval]))", "records/s")],
      kind="stat", unit="short", x=12, w=4, h=4)
panel("Incoming bytes/s", [("sum(rate(runnel_stream_incoming_bytes_total[$__rate_interval]))", "bytes/s")],
      kind="stat", unit="Bps", x=16, w=4, h=4)
panel("Max iterator age", [("max(runnel_stream_iterator_age_milliseconds)", "age")],
      kind="stat", unit="ms", x=20, w=4, h=4)
panel("API requests/s by operation",
      [("sum by (operation) (rate(runnel_api_requests_total[$__rate_interval]))", "{{operation}}")],
      unit="reqps", x=0, w=8)
panel("API errors/s by Kinesis error",
      [('sum by (outcome) (rate(runnel_api_requests_total{outcome!="ok"}[$__rate_interval]))', "{{outcome}}")],
      unit="reqps", x=8, w=8)
panel("API latency p99 by operation",
      [(q("runnel_api_latency_seconds", "operation", 0.99), "{{operation}}")], unit="s", x=16, w=8)

row("Streams: throughput and latency")
panel("Incoming bytes/s",
      [(f"sum by (stream) (rate(runnel_stream_incoming_bytes_total{{{STREAM}}}[$__rate_interval]))", "{{stream}}")],
      unit="Bps", x=0, w=8)
panel("Incoming records/s",
      [(f"sum by (stream) (rate(runnel_stream_incoming_records_total{{{STREAM}}}[$__rate_interval]))", "{{stream}}")],
      x=8, w=8)
panel("Outgoing (GetRecords) bytes/s",
      [(f"sum by (stream) (rate(runnel_stream_get_records_bytes_total{{{STREAM}}}[$__rate_interval]))", "{{stream}} GetRecords"),
       (f"sum by (stream) (rate(runnel_stream_outgoing_bytes_total{{{STREAM}}}[$__rate_interval]))", "{{stream}} all consumers")],
      unit="Bps", x=16, w=8)
panel("Put latency p50 / p99",
      [(q("runnel_stream_put_latency_seconds", "stream, operation", 0.5, STREAM), "{{stream}} {{operation}} p50"),
       (q("runnel_stream_put_latency_seconds", "stream, operation", 0.99, STREAM), "{{stream}} {{operation}} p99")],
      unit="s", x=0, w=8)
panel("GetRecords latency p50 / p99",
      [(q("runnel_stream_get_records_latency_seconds", "stream", 0.5, STREAM), "{{stream}} p50"),
       (q("runnel_stream_get_records_latency_seconds", "stream", 0.99, STREAM), "{{stream}} p99")],
      unit="s", x=8, w=8)
panel("Put success ratio",
      [(f'sum by (stream, operation) (rate(runnel_stream_put_requests_total{{{STREAM},outcome="success"}}[$__rate_interval])) '
        f'/ sum by (stream, operation) (rate(runnel_stream_put_requests_total{{{STREAM}}}[$__rate_interval]))',
        "{{stream}} {{operation}}"),
       (f'sum by (stream) (rate(runnel_stream_get_records_requests_total{{{STREAM},outcome="success"}}[$__rate_interval])) '
        f'/ sum by (stream) (rate(runnel_stream_get_records_requests_total{{{STREAM}}}[$__rate_interval]))',
        "{{stream}} GetRecords")],
      unit="percentunit", x=16, w=8)
panel("PutRecords entries/s by outcome",
      [(f"sum by (stream, outcome) (rate(runnel_stream_put_records_records_total{{{STREAM}}}[$__rate_interval]))", "{{stream}} {{outcome}}")],
      x=0, w=8)
panel("Throttled (ProvisionedThroughputExceeded)",
      [(f"sum by (stream) (rate(runnel_stream_write_throttled_records_total{{{STREAM}}}[$__rate_interval]))", "{{stream}} write records/s"),
       (f"sum by (stream) (rate(runnel_stream_read_throttled_total{{{STREAM}}}[$__rate_interval]))", "{{stream}} read calls/s")],
      x=8, w=8)
panel("Shard-level incoming bytes/s (enhanced monitoring)",
      [(f'sum by (stream, shard) (rate(runnel_shard_metric_total{{{STREAM},metric="IncomingBytes"}}[$__rate_interval]))', "{{stream}} {{shard}}")],
      unit="Bps", x=16, w=8)

row("Consumers")
panel("Iterator age (GetRecords.IteratorAgeMilliseconds)",
      [(f"max by (stream) (runnel_stream_iterator_age_milliseconds{{{STREAM}}})", "{{stream}}")],
      unit="ms", x=0, w=12)
panel("Iterator age per shard (enhanced monitoring)",
      [(f"max by (stream, shard) (runnel_shard_iterator_age_milliseconds{{{STREAM}}})", "{{stream}} {{shard}}")],
      unit="ms", x=12, w=12)

row("Raft")
panel("Groups hosted / led per node",
      [("runnel_raft_groups_hosted", "{{instance}} hosted"), ("runnel_raft_groups_led", "{{instance}} led")],
      x=0, w=8)
panel("Leader changes/s and terms",
      [("max(rate(runnel_raft_leader_changes_total[$__rate_interval]))", "leader changes/s (busiest node's view)"),
       ('max(runnel_raft_term{group="meta"})', "metadata term"),
       ('max(runnel_raft_term{group="shard_max"})', "largest shard term")],
      x=8, w=8)
panel("Replication lag (entries)", [("runnel_raft_replication_lag_entries", "{{instance}}")], x=16, w=8)
panel("Commit latency p50 / p99 (proposal to applied)",
      [(q("runnel_raft_commit_seconds", "", 0.5), "p50"), (q("runnel_raft_commit_seconds", "", 0.99), "p99")],
      unit="s", x=0, w=8)
panel("Apply latency p99",
      [(q("runnel_raft_apply_seconds", "instance", 0.99), "{{instance}}")], unit="s", x=8, w=8)
panel("Proposals pending; snapshots",
      [("runnel_raft_proposals_pending", "{{instance}} pending"),
       ("sum(rate(runnel_raft_snapshots_sent_total[$__rate_interval]))", "snapshots sent/s"),
       ("sum(rate(runnel_raft_snapshots_installed_total[$__rate_interval]))", "snapshots installed/s")],
      x=16, w=8)
panel("Records per entry (batching) p50",
      [(q("runnel_shard_entry_records", "", 0.5), "p50")], x=0, w=8)
panel("Quiet shard groups; wakes/s",
      [("runnel_raft_groups_quiet", "{{instance}} quiet"),
       ("sum by (reason) (rate(runnel_raft_quiesce_wakes_total[$__rate_interval]))", "wakes/s: {{reason}}")],
      x=8, w=8,
      desc="Idle shard groups whose Raft timers are stopped (docs/design.md, Quiet groups), and why quiet groups woke")

row("Storage")
panel("WAL fsync latency p50 / p99",
      [(q("runnel_storage_fsync_seconds", "instance", 0.5), "{{instance}} p50"),
       (q("runnel_storage_fsync_seconds", "instance", 0.99), "{{instance}} p99")],
      unit="s", x=0, w=8)
panel("Group commit: jobs per fsync p50",
      [(q("runnel_storage_sync_batch_jobs", "instance", 0.5), "{{instance}} jobs"),
       (q("runnel_storage_sync_batch_entries", "instance", 0.5), "{{instance}} operations")],
      x=8, w=8)
panel("Disk free", [('runnel_storage_disk_bytes{kind="free"}', "{{instance}}")], unit="bytes", x=16, w=8)
panel("Bytes on disk per stream",
      [(f"sum by (stream) (runnel_storage_stream_bytes{{{STREAM}}})", "{{stream}}")], unit="bytes", x=0, w=8)
panel("RocksDB: SST, memtables, pending compaction",
      [('runnel_rocksdb{figure="sst_bytes"}', "{{instance}} sst"),
       ('runnel_rocksdb{figure="blob_bytes"}', "{{instance}} blob files"),
       ('runnel_rocksdb{figure="memtable_bytes"}', "{{instance}} memtables"),
       ('runnel_rocksdb{figure="pending_compaction_bytes"}', "{{instance}} pending compaction")],
      unit="bytes", x=8, w=8)
panel("RocksDB stalls and retention",
      [('rate(runnel_rocksdb_ticker_total{ticker="stall_micros"}[$__rate_interval]) / 1e6', "{{instance}} stalled s/s"),
       ('runnel_rocksdb{figure="write_stopped"}', "{{instance}} writes stopped"),
       ("sum(rate(runnel_storage_retention_trimmed_entries_total[$__rate_interval]))", "retention trims/s")],
      x=16, w=8)

row("Process")
panel("CPU (cores)", [("rate(runnel_process_cpu_seconds_total[$__rate_interval])", "{{instance}}")], x=0, w=8)
panel("Resident memory", [('runnel_process{figure="resident_bytes"}', "{{instance}}")], unit="bytes", x=8, w=8)
panel("Open files", [('runnel_process{figure="open_fds"}', "{{instance}}"),
                     ('runnel_process{figure="max_fds"}', "{{instance}} limit")], x=16, w=8)
panel("Runtime lag p99 / max bucket", [(q("runnel_runtime_lag_seconds", "instance", 0.99), "{{instance}} p99"),
                                       (q("runnel_runtime_lag_seconds", "instance", 1.0), "{{instance}} max")],
      unit="s", x=0, w=8,
      desc="How late the node's async runtime woke a task due every 50 ms: its workers were all busy "
           "or one was blocked. Every request and Raft message on the node waited as long.")

dashboard = {
    "title": "Runnel",
    "uid": "runnel-overview",
    "description": "Runnel cluster: overview, streams, consumers, Raft, storage, process (docs/monitoring.md)",
    "tags": ["runnel", "kinesis"],
    "timezone": "browser",
    "schemaVersion": 39,
    "version": 1,
    "refresh": "10s",
    "time": {"from": "now-1h", "to": "now"},
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
        {"name": "stream", "type": "query", "datasource": DS, "label": "Stream",
         "query": {"query": "label_values(runnel_stream_incoming_records_total, stream)", "refId": "S"},
         "definition": "label_values(runnel_stream_incoming_records_total, stream)",
         "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
         "current": {"text": "All", "value": "$__all"}},
    ]},
    "annotations": {"list": []},
    "panels": panels,
}

out = os.path.join(os.path.dirname(__file__), "..", "cluster", "grafana", "runnel.json")
with open(out, "w") as f:
    json.dump(dashboard, f, indent=2)
    f.write("\n")
print(f"wrote {os.path.normpath(out)}: {sum(1 for p in panels if p['type'] != 'row')} panels")
