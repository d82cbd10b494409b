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

# The package built as a wheel with its C extension (gateway/dataplane/_head.c): the compiler
# and headers stay in this stage. The Python headers come with python:3.12-slim; a Debian
# python3 (the debootstrap base) needs python3-dev. Without a network this stage still builds a
# wheel, without the extension (the data plane then reads heads in Python, same answers).
FROM ${BASE_IMAGE} AS wheel
RUN python3 -m venv /opt/build && /opt/build/bin/pip install -q 'setuptools>=77' wheel
RUN dev=$(python3 -c "import os, sysconfig; \
print('' if os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')) \
else 'python3-dev')"); \
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends gcc libc6-dev $dev >/dev/null; } \
    || echo "no compiler: the wheel is built without its C extension"
COPY pyproject.toml README.md* LICENSE /src/
COPY gateway /src/gateway
RUN cd /src && { [ -f README.md ] || : > README.md; } \
 && /opt/build/bin/pip wheel -q --no-deps --no-build-isolation -w /wheels /src

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

# The package itself, from the wheel stage (no dependency resolution: it would reach PyPI again).
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels \
 && python -c "import gateway.dataplane._head" 2>/dev/null \
    && echo "data plane: heads read in C" || echo "data plane: heads read in Python"

COPY config /usr/share/serve-gateway/config
WORKDIR /var/lib/serve-gateway
# Root: the docker runtime talks to the mounted /var/run/docker.sock (root:docker 0660).
EXPOSE 8080 8081
ENTRYPOINT ["serve-gateway"]
CMD ["up", "/etc/serve-gateway/config.yaml"]
# Lets scripts/docker-setup.sh prune this image's superseded builds, and nothing else.
LABEL serve-gateway.build=gateway
