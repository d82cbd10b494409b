# A Docker node for the multi-node tests (tests/swarm_multi): Debian's docker.io on the project's
# base image, run privileged as docker-in-docker. Several of these on one bridge network are a
# Swarm of several machines on one host. No registry is reachable here, so the base is the local
# debootstrap image (scripts/docker-setup.sh) and Debian's apt (plain HTTP) brings dockerd.
#
#   docker build -f tests/swarm_multi/node.Dockerfile -t serve-gateway-node:bookworm tests/swarm_multi
ARG BASE_IMAGE=serve-gateway-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker.io iptables iproute2 procps ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
COPY node-entrypoint.sh /usr/local/bin/node-entrypoint.sh
# /var/lib/docker must not be on the container's own overlayfs (overlay2 cannot stack on it):
# the node is run with a volume there, which `docker rm -v` removes with the node.
VOLUME /var/lib/docker
ENTRYPOINT ["/usr/local/bin/node-entrypoint.sh"]
LABEL serve-gateway.build=node
