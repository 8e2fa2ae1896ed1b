"""A fake email provider for tests, usable from a separate worker process.

EMAIL_BACKEND=tests.fake_esp.EmailBackend, with FAKE_ESP_DIR (where sent messages are
written, one JSON object per line) and FAKE_ESP_FAILURES (how many sends fail first,
counted across processes). A failure asks to be retried after FAKE_ESP_RETRY_AFTER
seconds, as a provider's HTTP 429 Retry-After would.
"""

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

from django.core.mail.backends.base import BaseEmailBackend


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
        with _locked():
            failures_file = _dir() / "failures"
            failed = int(failures_file.read_text() or 0) if failures_file.exists() else 0
            if failed < int(os.environ.get("FAKE_ESP_FAILURES", "0")):
                failures_file.write_text(str(failed + 1))
                raise ProviderUnavailable(float(os.environ.get("FAKE_ESP_RETRY_AFTER", "1")))
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
        return len(email_messages)


def sent(directory) -> list[dict]:
    path = Path(directory) / "sent.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def failures(directory) -> int:
    path = Path(directory) / "failures"
    return int(path.read_text() or 0) if path.exists() else 0
