"""The mixed load of bench/load.py, as Locust users (one class per kind of visitor).

Run through bench/load.py, which starts the server, worker and beat and reads the
figures back; the rates come from the environment it sets:

  LOAD_SUBMIT_RATE   report submissions with a photo per second (residents)
  LOAD_STATUS_RATE   status-page lookups per second
  LOAD_OTHER_RATE    each of: portal browsing, Open311 GET, Open311 POST, admin lists
  LOAD_NUMBERS       file of public tracking numbers to look up
  LOAD_API_KEY       an Open311 key

Every user sends one request per second (constant_throughput), so a rate is a number of
users and the load is open-ended in the way a surge of residents is. The users are
FastHttpUsers (geventhttpclient): the load generator shares the machine's two cores with
the server, and requests-based users would take several times the CPU per request.
"""

import io
import itertools
import os
import random
import re
import threading

from locust import FastHttpUser, constant_throughput, events, task
from PIL import Image
from urllib3 import encode_multipart_formdata

SUBMIT_RATE = int(os.environ.get("LOAD_SUBMIT_RATE", "10"))
STATUS_RATE = int(os.environ.get("LOAD_STATUS_RATE", "50"))
OTHER_RATE = int(os.environ.get("LOAD_OTHER_RATE", "1"))
NUMBERS = open(os.environ["LOAD_NUMBERS"]).read().split() if "LOAD_NUMBERS" in os.environ else []
API_KEY = os.environ.get("LOAD_API_KEY", "")
SUBMITTED_LOG = os.environ.get("LOAD_SUBMITTED", "/dev/null")
_log_lock = threading.Lock()
_counter = itertools.count(1)


def _photo() -> bytes:
    """A phone-sized JPEG (1600x1200) of noise, so it cannot compress away: about 1 MB."""
    image = Image.effect_noise((1600, 1200), 40).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


PHOTO = _photo()
DESCRIPTIONS = [
    "Deep pothole in the right lane, cars swerving around it",
    "Streetlight out, the whole block is dark at night",
    "Trash not picked up on our street this week",
    "Water bubbling up from the street by the hydrant",
    "Graffiti on the underpass wall",
]


class ReportForm:
    """What a browser learns from GET /report/: CSRF token, categories, map bounds."""

    def __init__(self, page: str):
        self.token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        select = re.search(r'<select name="category".*?</select>', page, re.S).group(0)
        self.categories = re.findall(r'<option value="(\d+)"', select)
        bounds = re.search(
            r'"bounds":\s*\[\[([-\d.]+),\s*([-\d.]+)\],\s*\[([-\d.]+),\s*([-\d.]+)\]', page
        )
        self.min_lat, self.min_lng, self.max_lat, self.max_lng = map(float, bounds.groups())


class Resident(FastHttpUser):
    """Reports a problem with a photo from a phone, then reads the confirmation."""

    fixed_count = SUBMIT_RATE
    wait_time = constant_throughput(1)

    def on_start(self):
        self.form = ReportForm(self.client.get("/report/", name="GET /report/").text)

    @task
    def submit(self):
        n = next(_counter)
        form = self.form
        data = {
            "csrfmiddlewaretoken": form.token,
            "category": random.choice(form.categories),
            "description": random.choice(DESCRIPTIONS),
            "address": f"{random.randint(1, 400)} Main St",
            "lat": f"{random.uniform(form.min_lat + 0.01, form.max_lat - 0.01):.6f}",
            "lng": f"{random.uniform(form.min_lng + 0.01, form.max_lng - 0.01):.6f}",
            "email": f"load{n}@load.example",
            "website": "",
            "file_anyway": "1",
        }
        # The multipart body a browser sends; FastHttpSession takes it ready-made.
        body, content_type = encode_multipart_formdata(
            [*data.items(), ("photos", ("pothole.jpg", PHOTO, "image/jpeg"))]
        )
        headers = {
            "X-Forwarded-For": f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",
            "Content-Type": content_type,
        }
        with self.client.post(
            "/report/",
            data=body,
            headers=headers,
            name="POST /report/ (photo)",
            allow_redirects=False,
            catch_response=True,
        ) as response:
            location = response.headers.get("Location", "")
            number = re.search(r"/report/done/([A-Z0-9-]+)/", location)
            if response.status_code != 302 or not number:
                response.failure(f"{response.status_code}: no tracking number")
                return
            with _log_lock, open(SUBMITTED_LOG, "a") as log:
                log.write(number.group(1) + "\n")
        self.client.get(location, name="GET /report/done/<number>/")


class StatusReader(FastHttpUser):
    """Follows a report on its public status page."""

    fixed_count = STATUS_RATE
    wait_time = constant_throughput(1)

    @task
    def status(self):
        self.client.get(f"/requests/{random.choice(NUMBERS)}/", name="GET /requests/<number>/")


class Browser(FastHttpUser):
    fixed_count = OTHER_RATE
    wait_time = constant_throughput(1)

    @task
    def browse(self):
        self.client.get("/", name="GET /")
        self.client.get("/transparency/", name="GET /transparency/")


class Open311Reader(FastHttpUser):
    fixed_count = OTHER_RATE
    wait_time = constant_throughput(1)

    @task
    def read(self):
        self.client.get("/open311/v2/services.json", name="GET open311 services.json")
        self.client.get(
            "/open311/v2/requests.json?status=open", name="GET open311 requests.json?status=open"
        )


class Open311Writer(FastHttpUser):
    fixed_count = OTHER_RATE
    wait_time = constant_throughput(1)

    def on_start(self):
        services = self.client.get("/open311/v2/services.json", name="GET open311 services.json")
        self.codes = [s["service_code"] for s in services.json() if s.get("type") != "batch"]
        self.form = ReportForm(self.client.get("/report/", name="GET /report/").text)

    @task
    def post(self):
        n = next(_counter)
        with self.client.post(
            "/open311/v2/requests.json",
            data={
                "api_key": API_KEY,
                "service_code": random.choice(self.codes),
                "lat": f"{random.uniform(self.form.min_lat + 0.01, self.form.max_lat - 0.01):.6f}",
                "long": f"{random.uniform(self.form.min_lng + 0.01, self.form.max_lng - 0.01):.6f}",
                "description": random.choice(DESCRIPTIONS),
                "email": f"api{n}@load.example",
            },
            name="POST open311 requests.json",
            catch_response=True,
        ) as response:
            if response.status_code in (200, 201):
                body = response.json()
                number = body[0].get("service_request_id") if body else None
                if number:
                    with _log_lock, open(SUBMITTED_LOG, "a") as log:
                        log.write(number + "\n")
            elif response.status_code == 400 and "attribute" in response.text:
                response.success()  # a category with required questions: a client error
            else:
                response.failure(f"{response.status_code}: {response.text[:120]}")


class Dispatcher(FastHttpUser):
    """A dispatcher working the triage list in the admin."""

    fixed_count = OTHER_RATE
    wait_time = constant_throughput(1)

    def on_start(self):
        page = self.client.get("/admin/login/", name="GET /admin/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        self.client.post(
            "/admin/login/?next=/admin/",
            data={
                "csrfmiddlewaretoken": token,
                "username": "dispatcher",
                "password": "civicdesk-demo",
            },
            name="POST /admin/login/",
        )

    @task
    def lists(self):
        self.client.get("/admin/requests_app/servicerequest/", name="GET admin request list")
        self.client.get(
            "/admin/requests_app/servicerequest/?status__exact=received",
            name="GET admin request list (filtered)",
        )


@events.quitting.add_listener
def _keep_exit_code(environment, **kwargs):
    # Figures, not a verdict: bench/load.py reports the errors itself.
    environment.process_exit_code = 0
