"""Development-only parts of bigearth-stac, installed by ``make setup``, never shipped.

Real parts for tests, the demo, notebooks and benchmarks: a loopback S3 server (moto in server
mode, a separate process), a fault-injecting proxy (a real socket between client and server), a
full-archive synthetic index without pixels, and the end-to-end demo. Nothing here patches a
library in-process. The shipped packages (``bigearth_stac``, ``catalog_builder``) never import
this one.
"""

from bigearth_devtools.faultproxy import FaultPlan, FaultProxy, start_fault_proxy
from bigearth_devtools.s3server import S3Server, start_s3_server

__all__ = ["FaultPlan", "FaultProxy", "S3Server", "start_fault_proxy", "start_s3_server"]
