"""The OpenAI fine-tuning API under ``tuneforge serve``: uploaded files, jobs trained by worker processes.

- ``store`` — files, jobs and events in SQLite in the server's state folder (durable across restarts);
- ``files`` — where uploads live on disk and how they are written (random ids, size cap);
- ``spec`` — a job request (``hyperparameters`` or ``method``, ``tuneforge`` extras) checked and turned
  into a tuneforge recipe;
- ``validate`` — the uploaded chat JSONL through tuneforge's own data preparation, into the run's data;
- ``worker`` — one training process per job: ``tuneforge train`` on the job's run folder, cancel, death;
- ``manager`` — the thread that moves jobs validating_files -> queued -> running -> done and reports
  events, checkpoints and the result file.
"""
