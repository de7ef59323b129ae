#!/bin/bash
# Start dockerd (Debian docker.io 20.10, API <= 1.41) on a backend socket and the API-version
# proxy on the default /var/run/docker.sock (needed by bollard 0.20 / testcontainers 0.27 which send /v1.52).
set -e
ENGINE_SOCK=/var/run/docker-engine.sock
if ! curl -sf --unix-socket $ENGINE_SOCK http://localhost/_ping >/dev/null 2>&1; then
  nohup dockerd -H unix://$ENGINE_SOCK > /tmp/dockerd.log 2>&1 &
  echo $! > /tmp/dockerd.pid
  for i in $(seq 60); do curl -sf --unix-socket $ENGINE_SOCK http://localhost/_ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
if ! curl -sf --unix-socket /var/run/docker.sock http://localhost/v1.52/_ping >/dev/null 2>&1; then
  nohup python3 "$(dirname "$0")/docker-api-proxy.py" /var/run/docker.sock $ENGINE_SOCK > /tmp/docker-api-proxy.log 2>&1 &
  echo $! > /tmp/docker-api-proxy.pid
  for i in $(seq 20); do [ -S /var/run/docker.sock ] && break; sleep 0.25; done
fi
docker version --format 'server {{.Server.Version}} api {{.Server.APIVersion}}'
