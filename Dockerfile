# payrun: one image for every role; the service's command picks it (migrate, api, dispatcher, sim, employer).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# An editable install keeps sql/ (migrations and queries, read from the source tree) next to the code.
COPY . .
RUN pip install -e . \
    && groupadd --gid 10001 payrun \
    && useradd --create-home --uid 10001 --gid payrun --shell /usr/sbin/nologin payrun

# Not root: nothing at run time writes to /app.
USER 10001:10001

ENTRYPOINT ["payrun"]
CMD ["--help"]
