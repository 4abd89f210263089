"""``python -m bench.msgpack_ab [ROUNDS]``: W1/R1 over ZEO with pickles vs msgpack + guard.

Two runzeo processes at once: a stock one (``msgpack false``, no zpydb guard: what
every ZEO number before issue 12 measured) and one with the bundled ``zeo.conf``
(msgpack, ``%import zpydb.zeo_guard``).  zpydb and raw ZODB clients of each run
the W1 (durable top-level write) and R1 (fresh path read) operations of
bench/core.py, all interleaved round by round by :func:`bench.common.alternate`,
so machine noise hits both protocols alike.  Prints one line per contestant and
the JSON of the stats.  Results: docs/benchmarks.md, "msgpack on the wire".
"""

import json
import sys
import tempfile
from pathlib import Path

import zpydb
from devservers.zeo import ZeoServer
from zpydb import server as zserver

from .common import alternate, raw_zeo

STOCK_CONFIG = """\
<zeo>
  address {address}
  msgpack false
</zeo>
<filestorage 1>
  path {data}/Data.fs
  blob-dir {data}/blobs
</filestorage>
"""


class StockServer(ZeoServer):
    """runzeo with ZEO's defaults: pickle protocol, no zpydb guard."""

    def __init__(self, directory):
        super().__init__(directory)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stock_config = self.directory / "stock.conf"
        self.stock_config.write_text(STOCK_CONFIG.format(address=self.hostport,
                                                         data=self.data_dir))

    def command(self):
        return [zserver.runzeo_executable(), "-C", str(self.stock_config)]


def contestants(clients, raws):
    """W1 and R1 operations (as in bench/core.py) for every protocol."""
    w1, r1 = {}, {}
    for proto, db in clients.items():
        raw = raws[proto]
        w1[f"zpydb/{proto}"] = lambda i, db=db: db.__setitem__(f"w1z{i % 1000}", i)
        w1[f"raw/{proto}"] = lambda i, raw=raw: raw.write(
            lambda root: root["zpydb"].__setitem__(f"w1r{i % 1000}", i))
        r1[f"zpydb/{proto}"] = lambda i, db=db: db["l"][3]._run()
        r1[f"raw/{proto}"] = lambda i, raw=raw: raw.read(lambda root: root["zpydb"]["l"][3])
    return w1, r1


def main(rounds=7):
    tmp = Path(tempfile.mkdtemp(prefix="bench-msgpack-"))
    servers = {"pickle": StockServer(tmp / "pickle").start(),
               "msgpack": ZeoServer(tmp / "msgpack").start()}
    clients, raws = {}, {}
    try:
        for proto, server in servers.items():
            clients[proto] = zpydb.connect(server.url, wait_timeout=10)
            clients[proto]["l"] = list(range(10))
            raws[proto] = raw_zeo(server.address, tmpdir=str(tmp))
        w1, r1 = contestants(clients, raws)
        results = {"W1": alternate(w1, rounds, 150, 3.0), "R1": alternate(r1, rounds, 1000, 3.0)}
    finally:
        for closable in list(clients.values()) + list(raws.values()):
            closable.close()
        for server in servers.values():
            server.stop()
    for workload, stats in results.items():
        for name, row in stats.items():
            print(f"{workload} {name:16} {row['ops_per_s']:8.1f} ops/s  median "
                  f"{row['median_us']:6.0f} us  p99 {row['p99_us']:6.0f} us", file=sys.stderr)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 7))
