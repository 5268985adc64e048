"""Parts of scripts/loadtest.py: pure statistics and report (stats), the processes under test
(servers), CPU and memory meters (meters, shared with bench_inbound.py) and the PNG (plot)."""
