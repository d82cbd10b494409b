#!/usr/bin/env bash
# Fast benchmark backend: a 1-worker nginx answering 200 {"ok":true} (application/json) on every
# path and method, so GET /ready is 200 too.
#
#   bench/backend.sh PORT
#
# The conf, pid file and temp dirs go into a fresh directory under $BENCH_TMPDIR (run.py sets it
# and removes it afterwards; it also kills any nginx whose pid file it finds there, so a backend
# the gateway failed to stop never outlives the bench) or $TMPDIR or /tmp.
# nginx is exec'd in the foreground so that a signal to this process reaches nginx directly.
set -euo pipefail

port="${1:?usage: backend.sh PORT}"
base="${BENCH_TMPDIR:-${TMPDIR:-/tmp}}"
dir="$(mktemp -d "$base/nginx-backend-$port.XXXXXX")"
# nginx workers drop to an unprivileged user when the master runs as root: let them in.
chmod 755 "$dir"

cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 16384;
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    # Load generators and proxies hold their connections for the whole run: never recycle them
    # (nginx's default of 1000 requests would add reconnects to the direct baseline only).
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$port;
        location / {
            default_type application/json;
            return 200 '{"ok":true}';
        }
    }
}
EOF

exec nginx -p "$dir" -e stderr -c "$dir/nginx.conf" -g 'daemon off;'
