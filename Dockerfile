FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends gettext && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY civicdesk ./civicdesk
COPY requests_app ./requests_app
COPY routing ./routing
COPY notifications ./notifications
COPY surveys ./surveys
RUN pip install --no-cache-dir .
COPY . .
# With production settings, so that WhiteNoise's manifest (hashed, compressed files) is
# written: DEBUG=1 would collect plain files and every page would fail on the missing
# manifest. The key is thrown away with this build step.
RUN DEBUG=0 SECRET_KEY=collectstatic-only-not-a-real-key ALLOWED_HOSTS=localhost \
    python manage.py collectstatic --no-input
RUN useradd --create-home civicdesk && mkdir -p /data/media /data/var && chown -R civicdesk /data /app
USER civicdesk
EXPOSE 8000
CMD ["gunicorn", "civicdesk.wsgi", "--bind", "0.0.0.0:8000", "--workers", "4", "--timeout", "30", \
     "--max-requests", "2000", "--max-requests-jitter", "200"]
