"""File names of what serkd writes, read by every layer: run folders, teacher stores, grids.

``RUN_DIR/config.yaml`` and ``RUN_DIR/run.json`` describe a run, ``RUN_DIR/<fold>/results.json`` is a
fold's :class:`~serkd.train.results.FoldResult`, ``RUN_DIR/final/`` the model trained on every speaker,
``OUT/results.db`` a grid's results store, ``OUT/runs/<unit>/`` its units' run folders. Written here once;
``train/`` writes them, ``experiments/`` reads them.
"""

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
RESULTS = "results.json"
FINAL = "final"
DB_NAME = "results.db"
GRID_RUNS = "runs"
