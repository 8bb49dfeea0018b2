"""The base of the failures a user can cause (a bad device, an unusable folder, a damaged checkpoint).

``hybrid`` commands print an expected failure as one line, ``error: <what>: <why>; <what to do>``, on
stderr and exit with code 2 (``hybrid.cli``). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class HybridError(Exception):
    """An expected failure whose message is meant for the user as it stands (no traceback)."""


class DeviceError(HybridError):
    """A ``--device`` that does not exist or is not available on this machine."""


def os_error_message(e: OSError) -> str:
    """One line for a file-system failure: the path, the reason, what to do."""
    if e.filename is None and e.errno is None:  # raised with a message of its own
        return str(e)
    path = e.filename if e.filename is not None else "a file"
    why = (e.strerror or str(e)).lower()
    if isinstance(e, PermissionError):
        todo = "fix the permissions or choose another folder"
    elif isinstance(e, FileNotFoundError):
        todo = "check the path"
    elif e.errno == 28:  # ENOSPC
        todo = "free some space or choose another folder"
    else:
        todo = "check the path and the disk"
    return f"{path}: {why}; {todo}"
