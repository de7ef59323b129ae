#!/bin/bash
# Minimal re-implementation of the official postgres image entrypoint (PostgreSQL 15, Debian bookworm).
# Env: POSTGRES_USER (default postgres), POSTGRES_PASSWORD (default postgres),
#      POSTGRES_DB (default $POSTGRES_USER), POSTGRES_HOST_AUTH_METHOD (default md5 if password set, else trust),
#      POSTGRES_INITDB_ARGS (optional), PGDATA (default /var/lib/postgresql/data).
# Log behaviour matches the official image: the temporary init server logs to STDOUT (via pg_ctl),
# the final server logs to STDERR, so "database system is ready to accept connections"
# appears once on stdout and once on stderr on first start (what testcontainers-modules waits for).
set -Eeo pipefail

export PATH="/usr/lib/postgresql/15/bin:$PATH"
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"

# Arguments: "-c fsync=off" etc. are postgres options.
if [ "${1:0:1}" = '-' ] || [ "$#" -eq 0 ]; then
	set -- postgres "$@"
fi

# Not starting postgres: just run the given command.
if [ "$1" != 'postgres' ]; then
	exec "$@"
fi

# Running as root: prepare directories, then re-exec as the postgres user.
if [ "$(id -u)" = '0' ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown -R postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	chmod 3777 /var/run/postgresql
	export HOME=/var/lib/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_PASSWORD="${POSTGRES_PASSWORD-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
if [ -z "${POSTGRES_HOST_AUTH_METHOD:-}" ]; then
	if [ -n "$POSTGRES_PASSWORD" ]; then
		POSTGRES_HOST_AUTH_METHOD=md5
	else
		POSTGRES_HOST_AUTH_METHOD=trust
	fi
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	# --- initdb (superuser is POSTGRES_USER, password set via pwfile) ---
	pwfile="$(mktemp)"
	printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
	# shellcheck disable=SC2086
	initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD" \
		--encoding=UTF8 -D "$PGDATA" ${POSTGRES_INITDB_ARGS:-}
	rm -f "$pwfile"

	{
		echo
		echo "host all all 0.0.0.0/0 $POSTGRES_HOST_AUTH_METHOD"
		echo "host all all ::/0 $POSTGRES_HOST_AUTH_METHOD"
	} >> "$PGDATA/pg_hba.conf"
	{
		echo
		echo "listen_addresses = '*'"
		echo "port = 5432"
	} >> "$PGDATA/postgresql.conf"

	# --- temporary server (unix socket only); output goes to stdout like the official image ---
	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start

	export PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD" PGHOST=/var/run/postgresql PGPORT=5432
	psql=(psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc)

	if [ "$POSTGRES_DB" != 'postgres' ]; then
		exists="$(echo "SELECT 1 FROM pg_database WHERE datname = :'db' ;" | "${psql[@]}" --dbname postgres -tA -v db="$POSTGRES_DB")"
		if [ -z "$exists" ]; then
			"${psql[@]}" --dbname postgres -v db="$POSTGRES_DB" <<-'EOSQL'
				CREATE DATABASE :"db";
			EOSQL
		fi
	fi

	# --- /docker-entrypoint-initdb.d (*.sh, *.sql, *.sql.gz) ---
	if [ -d /docker-entrypoint-initdb.d ]; then
		for f in /docker-entrypoint-initdb.d/*; do
			[ -e "$f" ] || continue
			case "$f" in
				*.sh)
					if [ -x "$f" ]; then echo "$0: running $f"; "$f"; else echo "$0: sourcing $f"; . "$f"; fi ;;
				*.sql)    echo "$0: running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f"; echo ;;
				*.sql.gz) echo "$0: running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB"; echo ;;
				*)        echo "$0: ignoring $f" ;;
			esac
		done
	fi

	pg_ctl -D "$PGDATA" -m fast -w stop
	unset PGPASSWORD
	echo
	echo 'PostgreSQL init process complete; ready for start up.'
	echo
else
	echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
	echo
fi

# --- final server in the foreground, logs on stderr ---
exec "$@"
