"""A fake email provider for tests, usable from a separate worker process.

EMAIL_BACKEND=tests.fake_esp.EmailBackend, with FAKE_ESP_DIR (where sent messages are
written, one JSON object per line) and FAKE_ESP_FAILURES (how many sends fail first,
counted across processes). A failure asks to be retried after FAKE_ESP_RETRY_AFTER
seconds, as a provider's HTTP 429 Retry-After would ("none": a failure without one).

For the fault drills (tests/test_fault_drills.py):

- FAKE_ESP_DOWN_UNTIL, a POSIX timestamp: an outage on the test's clock. Until
  django.utils.timezone.now() reaches it every send fails (and counts as a failure).
- FAKE_ESP_HOLD=before|after: a send stops and waits, before the provider has accepted the
  message or just after (it is in sent.jsonl), until a file named "release" appears in
  FAKE_ESP_DIR; a file named "holding" says that it waits. A worker can be killed there.
"""

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone


class ProviderUnavailable(Exception):
    def __init__(self, retry_after):
        super().__init__("503 provider unavailable")
        self.retry_after = retry_after


def _dir() -> Path:
    path = Path(os.environ["FAKE_ESP_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked():
    with open(_dir() / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class EmailBackend(BaseEmailBackend):
    def send_messages(self, email_messages):
        _hold("before")
        with _locked():
            failures_file = _dir() / "failures"
            failed = int(failures_file.read_text() or 0) if failures_file.exists() else 0
            if failed < int(os.environ.get("FAKE_ESP_FAILURES", "0")) or _down():
                failures_file.write_text(str(failed + 1))
                raise ProviderUnavailable(_retry_after())
            with open(_dir() / "sent.jsonl", "a", encoding="utf-8") as out:
                for message in email_messages:
                    html = next(
                        (c for c, t in getattr(message, "alternatives", []) if t == "text/html"), ""
                    )
                    out.write(
                        json.dumps(
                            {
                                "to": message.to,
                                "subject": message.subject,
                                "headers": message.extra_headers,
                                "text": message.body,
                                "html": html,
                            }
                        )
                        + "\n"
                    )
        _hold("after")
        return len(email_messages)


def _retry_after():
    value = os.environ.get("FAKE_ESP_RETRY_AFTER", "1")
    return None if value == "none" else float(value)


def _down() -> bool:
    until = os.environ.get("FAKE_ESP_DOWN_UNTIL")
    return bool(until) and timezone.now().timestamp() < float(until)


def _hold(stage):
    if os.environ.get("FAKE_ESP_HOLD") != stage:
        return
    (_dir() / "holding").write_text(str(os.getpid()))
    # Bounded, so that a drill that never kills or releases cannot hang a worker forever.
    deadline = time.monotonic() + 120
    while not (_dir() / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def sent(directory) -> list[dict]:
    path = Path(directory) / "sent.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def failures(directory) -> int:
    path = Path(directory) / "failures"
    return int(path.read_text() or 0) if path.exists() else 0
