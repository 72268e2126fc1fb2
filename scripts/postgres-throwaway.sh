# Sourced by scripts/test.sh: starts a throwaway PostgreSQL server (initdb in a temp dir, a
# free loopback port, trust auth), exports MEDPO_TEST_POSTGRES_URL, and stops and deletes
# it when the calling shell exits. Needs Debian's `postgresql` package (scripts/setup.sh).

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "error: PostgreSQL server binaries not found under /usr/lib/postgresql (run scripts/setup.sh)" >&2
    return 1
fi
pg_dir=$(mktemp -d /tmp/medpo-pg.XXXXXX)
medpo_pg_stop() {
    pg_as "'$pg_bin/pg_ctl' -D '$pg_dir/data' -m immediate stop >/dev/null 2>&1" || true
    rm -rf "$pg_dir"
}
trap medpo_pg_stop EXIT
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# initdb refuses to run as root: run the server as the `postgres` user then.
if [ "$(id -u)" = 0 ]; then
    chown postgres "$pg_dir"
    pg_as() { (cd / && su postgres -s /bin/sh -c "$*"); }
else
    pg_as() { sh -c "$*"; }
fi
pg_as "'$pg_bin/initdb' -D '$pg_dir/data' -A trust -U postgres --no-sync -E UTF8 >'$pg_dir/initdb.log' 2>&1" \
    || { cat "$pg_dir/initdb.log" >&2; return 1; }
pg_as "'$pg_bin/pg_ctl' -D '$pg_dir/data' -l '$pg_dir/server.log' -w -t 30 \
    -o \"-p $pg_port -k '$pg_dir' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200\" start >/dev/null" \
    || { cat "$pg_dir/server.log" >&2; return 1; }
export MEDPO_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
echo "started a throwaway PostgreSQL ($("$pg_bin/postgres" --version)) on 127.0.0.1:$pg_port"
