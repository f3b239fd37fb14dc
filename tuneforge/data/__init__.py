"""tuneforge.data: read raw data, turn it into instruction pairs, check it, split it.

Public entry points: :func:`tuneforge.data.prepare.prepare_data`, :func:`tuneforge.data.io.read_examples`,
:func:`tuneforge.data.sources.bundled_dataset_path`, and the chat helpers in :mod:`tuneforge.data.chat`.
"""

