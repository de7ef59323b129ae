#!/usr/bin/env bash
# Builds the local PostgreSQL image `cloacina-postgres:15` for the
# testcontainers path of `cargo xtask test-all --pg container`, on a machine
# where no image registry is reachable: a Debian rootfs from debootstrap, an
# entrypoint honouring the POSTGRES_* variables, `docker import`.
# Needs root, docker.io and debootstrap (apt-get install -y docker.io debootstrap),
# and a running engine (./start-docker.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="${1:-/tmp/pgroot}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if [ ! -x "$root/usr/lib/postgresql/15/bin/postgres" ]; then
  debootstrap --variant=minbase --include=postgresql-15,locales bookworm "$root" "$mirror"
fi
sed -i 's/^# *en_US.UTF-8/en_US.UTF-8/' "$root/etc/locale.gen" || true
chroot "$root" locale-gen
# The package creates a cluster of its own; the entrypoint makes the one we want.
rm -rf "$root/var/lib/postgresql/15" "$root/etc/postgresql/15" "$root/var/cache/apt/archives/"*.deb
mkdir -p "$root/docker-entrypoint-initdb.d" "$root/var/lib/postgresql/data" "$root/var/run/postgresql"
chroot "$root" chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
install -m 0755 "$here/docker-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
tar -C "$root" -c . | docker import \
  --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
  --change 'CMD ["postgres"]' \
  --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=en_US.utf8' \
  --change 'ENV PGDATA=/var/lib/postgresql/data' \
  --change 'EXPOSE 5432' \
  - cloacina-postgres:15
echo "built cloacina-postgres:15; run: CLOACINA_PG_IMAGE=cloacina-postgres:15 cargo xtask test-all --pg container"
