# Image for `oris serve`, `oris worker` and `oris db`. Build from the repository root:
#   docker build -t oris-runtime .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The wheel bundles migrations/ as oris/_migrations, so `oris db upgrade` works from any directory.
COPY pyproject.toml README.md ./
COPY oris ./oris
COPY migrations ./migrations
RUN pip install . && useradd --system --create-home --home-dir /home/oris oris

USER oris
WORKDIR /home/oris
EXPOSE 8080
CMD ["oris", "serve"]
