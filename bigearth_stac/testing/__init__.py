"""Real parts for tests, demos and benchmarks: a loopback S3 server and a fault-injecting proxy.

Nothing here patches a library in-process: the server is a separate process speaking HTTP, and
the proxy is a real socket between a client and that server.
"""

from bigearth_stac.testing.faultproxy import FaultPlan, FaultProxy, start_fault_proxy
from bigearth_stac.testing.s3server import S3Server, start_s3_server

__all__ = ["FaultPlan", "FaultProxy", "S3Server", "start_fault_proxy", "start_s3_server"]
