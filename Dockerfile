# Gateway image: `serve-gateway up /etc/serve-gateway/config.yaml`. Mount the config there; with
# the docker runtime also mount /var/run/docker.sock and set gateway.docker.network so that the
# gateway reaches replicas by container address.
#
# Build from the repository root:  docker build -t serve-gateway:dev .
# The first stages are identical to examples/Dockerfile, so both images share those layers.
ARG BASE_IMAGE=python:3.12-slim

# The dependency lists alone: the slow pip layers below are keyed on these files' content, so
# editing pyproject.toml elsewhere (version, dev tools, tool settings) keeps them cached.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /src/
RUN python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
open('/runtime.txt', 'w').write('\n'.join(p['dependencies']) + '\n'); \
open('/examples.txt', 'w').write('\n'.join(p['optional-dependencies']['examples']) + '\n'); \
open('/docker.txt', 'w').write('\n'.join(p['optional-dependencies']['docker']) + '\n')"

FROM ${BASE_IMAGE}

# A venv works on both bases: python:3.12-slim and the debootstrap base (python3 + venv only,
# no `python` or `pip` on PATH, and Debian's system pip refuses to install outside a venv).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv

# Dependencies before code: rebuilt only when the dependency list changes.
COPY --from=requirements /runtime.txt /tmp/
RUN pip install -r /tmp/runtime.txt 'setuptools>=77'
# The Docker SDK (the [docker] extra): this gateway image runs the docker runtime.
COPY --from=requirements /docker.txt /tmp/
RUN pip install -r /tmp/docker.txt

# The package itself (no dependency resolution, no build isolation: both would reach PyPI again).
COPY pyproject.toml README.md* LICENSE /src/
COPY gateway /src/gateway
RUN cd /src && { [ -f README.md ] || : > README.md; } \
 && pip install --no-deps --no-build-isolation /src && rm -rf /src

COPY config /usr/share/serve-gateway/config
WORKDIR /var/lib/serve-gateway
# Root: the docker runtime talks to the mounted /var/run/docker.sock (root:docker 0660).
EXPOSE 8080 8081
ENTRYPOINT ["serve-gateway"]
CMD ["up", "/etc/serve-gateway/config.yaml"]
# Lets scripts/docker-setup.sh prune this image's superseded builds, and nothing else.
LABEL serve-gateway.build=gateway
