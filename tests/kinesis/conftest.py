"""Fixtures of the Kinesis-compatibility suite: a real 3-node Runnel cluster on loopback (the
`runnel` binary from the cargo target directory), with SigV4 access keys configured, stopped and
removed after the session. RUNNEL_BIN overrides the binary; RUNNEL_TEST_KEEP=1 keeps the
directory with the node logs."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import boto3
import botocore.config
import pytest

ACCESS_KEY = "AKIDRUNNELTEST0001"
SECRET_KEY = "runnel-test-secret-key/0001"
REGION = "us-east-1"
ACCOUNT = "000000000000"


def runnel_bin():
    if os.environ.get("RUNNEL_BIN"):
        return os.environ["RUNNEL_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/runnel/target"))
    path = os.path.join(target, "debug", "runnel")
    if not os.path.exists(path):
        pytest.exit(f"runnel binary not found at {path}: build it first (scripts/test.sh does)", 2)
    return path


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Cluster:
    """Runnel node processes with their own data directories and ports."""

    def __init__(self, n, extra_toml="", name="kinesis"):
        self.dir = tempfile.mkdtemp(prefix=f"runnel-py-{name}-")
        ports = free_ports(2 * n)
        self.grpc = ports[:n]
        self.http = ports[n:]
        peers = ", ".join(f'{{ id = {i + 1}, addr = "127.0.0.1:{p}" }}' for i, p in enumerate(self.grpc))
        self.procs = []
        self.scheme = "https" if "[tls]" in extra_toml else "http"
        for i in range(n):
            cfg = os.path.join(self.dir, f"node{i + 1}.toml")
            with open(cfg, "w") as f:
                f.write(
                    f'node_id = {i + 1}\ndata_dir = "{self.dir}/node{i + 1}"\n'
                    f'grpc_listen = "127.0.0.1:{self.grpc[i]}"\nhttp_listen = "127.0.0.1:{self.http[i]}"\n'
                    f"peers = [ {peers} ]\n{extra_toml}\n"
                )
            log = open(os.path.join(self.dir, f"node{i + 1}.log"), "w")
            self.procs.append(
                subprocess.Popen([runnel_bin(), "serve", "--config", cfg], stdout=log, stderr=log)
            )
        self.wait_healthy()

    def endpoint(self, i):
        return f"{self.scheme}://127.0.0.1:{self.http[i]}"

    def wait_healthy(self, timeout=60):
        deadline = time.time() + timeout
        for i in range(len(self.procs)):
            while True:
                if self.procs[i].poll() is not None:
                    raise RuntimeError(f"node {i + 1} exited: see {self.dir}/node{i + 1}.log")
                try:
                    if self.scheme == "http":
                        with urllib.request.urlopen(self.endpoint(i) + "/healthz", timeout=2) as r:
                            if r.status == 200:
                                break
                    else:
                        with socket.create_connection(("127.0.0.1", self.http[i]), timeout=2):
                            time.sleep(1.0)
                            break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError(f"node {i + 1} not healthy within {timeout}s")
                time.sleep(0.2)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if os.environ.get("RUNNEL_TEST_KEEP"):
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


KEYED = f'[auth]\naccess_keys = [ {{ id = "{ACCESS_KEY}", secret = "{SECRET_KEY}" }} ]\n'


@pytest.fixture(scope="session")
def cluster():
    c = Cluster(3, KEYED)
    yield c
    c.stop()


def make_client(endpoint, secret=SECRET_KEY, key=ACCESS_KEY, validate=False, **kw):
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=botocore.config.Config(
            parameter_validation=validate,
            retries={"max_attempts": 3, "mode": "standard"},
            read_timeout=30,
        ),
        **kw,
    )


@pytest.fixture(scope="session")
def clients(cluster):
    """One boto3 client per node (server-side validation: the client's own checks are off)."""
    return [make_client(cluster.endpoint(i)) for i in range(3)]


@pytest.fixture(scope="session")
def kinesis(clients):
    return clients[0]


_counter = [0]


@pytest.fixture
def new_stream(clients):
    """Creates an ACTIVE stream: new_stream(shards=2, **create_kwargs) -> name."""
    created = []

    def make(shards=2, **kw):
        _counter[0] += 1
        name = f"py-{os.getpid()}-{_counter[0]}"
        args = {"StreamName": name, **kw}
        if shards is not None:
            args["ShardCount"] = shards
        clients[0].create_stream(**args)
        clients[1].get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            clients[0].delete_stream(StreamName=name)
        except clients[0].exceptions.ResourceNotFoundException:
            pass
