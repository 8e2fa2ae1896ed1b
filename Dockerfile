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
RUN DEBUG=1 python manage.py collectstatic --no-input
RUN useradd --create-home civicdesk && mkdir -p /data/media && chown -R civicdesk /data /app
USER civicdesk
EXPOSE 8000
CMD ["gunicorn", "civicdesk.wsgi", "--bind", "0.0.0.0:8000", "--workers", "4", "--access-logfile", "-"]
