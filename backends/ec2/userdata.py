"""The user data of a task instance: :file:`userdata.sh` with the task's values filled in.

Only three values go into the file as text: the image (quoted), and two whole numbers.
The task's script (its environment, ``extra_init`` and command) goes in base64-encoded,
so quotes, ``$()`` or newlines in a value cannot change what the instance runs.
"""

from __future__ import annotations

import base64
import math
import shlex
import string
import textwrap
from pathlib import Path

from backends.units import parse_duration

TEMPLATE = Path(__file__).with_name("userdata.sh")
# Where the instance keeps what ScriptHut reads back (see userdata.sh).
LOG_PATH = "/var/log/scripthut/task.log"
DONE_PATH = "/var/run/scripthut/done"
USER_DATA_LIMIT = 16 * 1024  # bytes, before base64: EC2's limit


class UserDataTemplate(string.Template):
    delimiter = "@"  # bash uses `$`


def render_user_data(*, image: str, script: str, time_limit: str, idle_terminate_seconds: int) -> str:
    """The user data for one task; ValueError if it is larger than EC2 accepts."""
    time_limit_seconds = parse_duration(time_limit)
    encoded = "\n".join(textwrap.wrap(base64.b64encode(script.encode()).decode(), 76))
    text = UserDataTemplate(TEMPLATE.read_text()).substitute(
        image=shlex.quote(image),
        time_limit_seconds=time_limit_seconds,
        shutdown_minutes=math.ceil((time_limit_seconds + idle_terminate_seconds) / 60),
        script_base64=encoded,
    )
    if len(text.encode()) > USER_DATA_LIMIT:
        raise ValueError(f"the task's script is too large for EC2 user data ({len(text.encode())} > 16384 bytes)")
    return text
