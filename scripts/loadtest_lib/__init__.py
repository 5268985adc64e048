"""Parts of scripts/loadtest.py: pure statistics and report (stats), the processes under test
(servers) and the PNG (plot)."""
