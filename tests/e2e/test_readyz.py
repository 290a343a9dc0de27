"""`/readyz` tells the load balancer the truth: 503 while the database is away, 200 once back."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.proxy import TcpProxy
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow


def readyz(server: ServerProcess) -> tuple[int | None, dict]:
    try:
        with urllib.request.urlopen(server.url + "/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None, {}


def wait_ready(server: ServerProcess, status: int, timeout: float) -> dict:
    """The /readyz body once it answers `status`; fails with the last answer after `timeout`."""
    deadline = time.monotonic() + timeout
    last: tuple[int | None, dict] = (None, {})
    while time.monotonic() < deadline:
        last = readyz(server)
        if last[0] == status:
            return last[1]
        time.sleep(0.2)
    raise AssertionError(f"/readyz answered {last} instead of {status} within {timeout}s")


@pytest.fixture
def proxy(database_url: str):
    with TcpProxy.for_database(database_url) as proxy:
        yield proxy


def test_readyz_flips_to_503_when_the_database_goes_away_and_back_when_it_returns(
    proxy, start_server, database_url
):
    server = start_server(env={"DATABASE_URL": proxy.url(database_url)})
    wait_ready(server, 200, timeout=10)

    proxy.cut()  # the database server is gone: connections reset, new ones refused
    body = wait_ready(server, 503, timeout=10)
    assert any("database" in problem for problem in body["problems"])
    assert server.http_status("/healthz") == 200  # alive, just not ready

    proxy.forward()
    wait_ready(server, 200, timeout=15)


def test_readyz_is_503_during_a_network_partition(proxy, start_server, database_url):
    server = start_server(env={"DATABASE_URL": proxy.url(database_url)})
    wait_ready(server, 200, timeout=10)

    proxy.hang()  # packets vanish: only a timeout can tell
    wait_ready(server, 503, timeout=15)

    proxy.forward()
    wait_ready(server, 200, timeout=20)
