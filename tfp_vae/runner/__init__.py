"""Studies: grids of run specs, a result store of one JSON record per run, executors."""
