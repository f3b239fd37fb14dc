"""How a training process that tuneforge launched is asked to stop: SIGINT, as Ctrl-C would.

`tuneforge ui`'s Stop and the fine-tuning API's Cancel send SIGINT to the ``tuneforge train`` process
they started. A UI or server started in the background by a shell (``nohup tuneforge ui &``) runs with
SIGINT ignored; its children inherit that, and Python leaves an inherited ignored SIGINT ignored, so
Stop would do nothing (and Cancel would wait for its SIGKILL). Both mark the processes they launch
(:data:`TAKE_SIGINT_ENV`) and the CLI takes SIGINT back in them (:func:`take_back_sigint`) before
anything else. Processes started any other way keep what their parent
gave them (a background job that ignores Ctrl-C keeps ignoring it).
"""

from __future__ import annotations

import os
import signal

TAKE_SIGINT_ENV = "TUNEFORGE_TAKE_SIGINT"


def take_back_sigint() -> bool:
    """In a process marked with ``TAKE_SIGINT_ENV``, SIGINT raises KeyboardInterrupt again (True if it had
    been ignored). The mark is removed, so this process's own children do not inherit it."""
    if not os.environ.pop(TAKE_SIGINT_ENV, None) or signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        return False
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return True
