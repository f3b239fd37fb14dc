"""`tuneforge ui`: the run lifecycle in a browser, over the same Python API as the CLI.

- :mod:`tuneforge.ui.catalog`  run folders: status (folder + process liveness), summaries, safe paths
- :mod:`tuneforge.ui.launch`   validate a pasted recipe, start/stop/resume ``tuneforge train`` processes
- :mod:`tuneforge.ui.arena`    base vs tuned answers, streamed, kept in ``<run>/arena.jsonl``
- :mod:`tuneforge.ui.auth`     API-key login cookie and CSRF checks
- :mod:`tuneforge.ui.app`      the FastAPI app: server-rendered pages (templates/) and one script (static/)

It sits at the same layer as ``serve``: it imports config, models, runs, eval, never the CLI.
"""
