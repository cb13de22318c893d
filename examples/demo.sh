#!/usr/bin/env bash
# make demo: the whole story on one machine, in a throw-away directory.
#
#  1. a throw-away partition (a loop-mounted ext4 image) as /v01/backup
#  2. an inventory with the seed's host zg-3.softxs.ch, VMs web and intern
#  3. the host daemon: one FUSE mount per VM, the remote view
#  4. real application backups through the mounts: a Capistrano Rails app
#     with its MariaDB database, git repositories, plain files, and one
#     backup that fails on purpose
#  5. a snapshot, browsed through the VM's .history, and verified
#  6. a backup server (odin.softxs.ch, its own partition) pulls the host's
#     remote view over ssh on loopback, verifies it and snapshots it
#  7. an off-site copy to a directory standing in for a USB drive
#  8. status, check (the Nagios plugin) on the host and on the backup
#     server, where the copies of last night are, and the status page
#
# Everything is cleaned up at the end, also on failure or Ctrl-C. With
# DEMO_KEEP=1 the daemon stays up (status page and /metrics) until Enter.
set -euo pipefail

BIN=$(realpath "${1:-bin/v2backup}")
D=$(mktemp -d /tmp/v2backup-demo.XXXXXX)
P=$D/v01/backup
DAEMON=""
MARIADB=""
SSHD=""

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
	set +e
	if [ -n "$DAEMON" ]; then kill -TERM "$DAEMON" 2>/dev/null; wait "$DAEMON" 2>/dev/null; fi
	if [ -n "$MARIADB" ]; then kill -TERM "$MARIADB" 2>/dev/null; wait "$MARIADB" 2>/dev/null; fi
	if [ -n "$SSHD" ]; then kill -TERM "$SSHD" 2>/dev/null; wait "$SSHD" 2>/dev/null; fi
	for m in $(grep -o " $D[^ ]*" /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null; done
	rm -rf "$D"
}
trap cleanup EXIT

step "1. a throw-away partition"
truncate -s 2G "$D/partition.img"
mkfs.ext4 -q -F "$D/partition.img"
mkdir -p "$P"
if mount -o loop "$D/partition.img" "$P" 2>/dev/null; then
	df -h "$P" | tail -1
else
	echo "(no loop devices here: using a plain directory as the partition)"
fi

step "2. the applications and their database server"
# MariaDB in the demo directory, on a socket, no network.
# Its own tmpdir: a starting server removes the temporary tables it finds
# there, so two sharing /tmp can spoil each other's install.
mkdir -p "$D/mysql/tmp"
mariadb-install-db --no-defaults --datadir="$D/mysql/data" --tmpdir="$D/mysql/tmp" --auth-root-authentication-method=normal --skip-test-db >/dev/null 2>&1
mariadbd --no-defaults --datadir="$D/mysql/data" --tmpdir="$D/mysql/tmp" --socket="$D/mysql/sock" --skip-networking --user=root \
	--pid-file="$D/mysql/pid" --log-error="$D/mysql/err.log" &
MARIADB=$!
for _ in $(seq 100); do [ -S "$D/mysql/sock" ] && break; sleep 0.1; done
mariadb --no-defaults -S "$D/mysql/sock" -u root <<'SQL'
CREATE DATABASE hydro_production;
CREATE USER hydro@localhost IDENTIFIED BY 'hydro-secret';
GRANT ALL ON hydro_production.* TO hydro@localhost;
USE hydro_production;
CREATE TABLE measurements (id INT PRIMARY KEY AUTO_INCREMENT, station VARCHAR(40), level_cm INT, taken DATETIME);
INSERT INTO measurements (station, level_cm, taken) VALUES ('Rhein Basel', 512, NOW()), ('Aare Bern', 231, NOW()), ('Limmat Zurich', 118, NOW());
SQL
echo "MariaDB on $D/mysql/sock with hydro_production (3 rows)"

# A Capistrano deployment: releases/, current -> releases/..., shared/ with
# log and pids (left out of backups) and var -> the data directory on the HD.
H=$D/apps/home/v2/rails/demo.softxs.ch/hydro
mkdir -p "$H/releases/20261101120000/config" "$H/releases/20261115093000/config" "$H/releases/20261115093000/app/models" \
	"$H/shared/log" "$H/shared/pids" "$D/apps/v01/rails/data/demo.softxs.ch/hydro/var/file_assets/2026/11"
ln -s "$H/releases/20261115093000" "$H/current"
ln -s "$D/apps/v01/rails/data/demo.softxs.ch/hydro/var" "$H/shared/var"
cat > "$H/releases/20261115093000/config/database.yml" <<YML
production:
  adapter: mysql2
  database: hydro_production
  username: hydro
  password: hydro-secret
  socket: $D/mysql/sock
YML
cp "$H/releases/20261115093000/config/database.yml" "$H/releases/20261101120000/config/"
echo "class Measurement < ApplicationRecord; end" > "$H/releases/20261115093000/app/models/measurement.rb"
echo "started" > "$H/shared/log/production.log"
head -c 300000 /dev/urandom > "$D/apps/v01/rails/data/demo.softxs.ch/hydro/var/file_assets/2026/11/gauge-photo.jpg"
# Git repositories of the tracking system.
G=$D/apps/home/v2/git/intern.softxs.ch
for repo in tracking docs; do
	git init -q -b main "$G/$repo.git" && git -C "$G/$repo.git" -c user.name=demo -c user.email=demo@softxs.ch commit -q --allow-empty -m "first commit of $repo"
	git -C "$G/$repo.git" tag v1.0
done
# The web site's files.
W=$D/apps/home/v2/www
mkdir -p "$W" && cp -a /usr/local/go/src/net/http "$W/"
echo "applications under $D/apps"

# An ssh server on loopback for the backup server's pulls, with its own
# host key and the backup server's user key.
mkdir -p "$D/ssh" && chmod 700 "$D/ssh"
ssh-keygen -q -t ed25519 -N '' -f "$D/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$D/ssh/id_odin"
cp "$D/ssh/id_odin.pub" "$D/ssh/authorized_keys"
for _ in $(seq 20); do
	PORT=$(shuf -i 20000-60000 -n 1)
	cat > "$D/ssh/sshd_config" <<CFG
Port $PORT
ListenAddress 127.0.0.1
HostKey $D/ssh/host_key
AuthorizedKeysFile $D/ssh/authorized_keys
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile $D/ssh/sshd.pid
CFG
	mkdir -p /run/sshd
	/usr/sbin/sshd -D -e -f "$D/ssh/sshd_config" 2>"$D/ssh/sshd.log" &
	SSHD=$!
	for _ in $(seq 50); do grep -q "Server listening" "$D/ssh/sshd.log" && break 2; kill -0 $SSHD 2>/dev/null || break; sleep 0.1; done
	SSHD=""
done
[ -n "$SSHD" ] || { echo "could not start sshd"; cat "$D/ssh/sshd.log"; exit 1; }
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$D/ssh/host_key.pub")" > "$D/ssh/known_hosts"
echo "sshd on 127.0.0.1:$PORT for the backup server's pulls"

cat > "$D/v2backup.toml" <<TOML
[site]
name = "softxs (demo)"
partition = "$P"

[site.snapshot]
time = "05:00"
quiet = "1s"
deadline = "10m"

[[server]]
name = "zg-3.softxs.ch"
ssh = "root@127.0.0.1"
ssh_port = $PORT
remote_view = "$D/view"
remote_view_idle = "2s"
history_mount = "$D/history"
host_mount = "$D/mnt/_host"
listen = "127.0.0.1:0"

[[vm]]
name = "web"
server = "zg-3.softxs.ch"
mount = "$D/mnt/web"

[[vm]]
name = "intern"
server = "zg-3.softxs.ch"
mount = "$D/mnt/intern"

[[app]]
name = "hydro"
description = "Hydro Demo"
server = "zg-3.softxs.ch"
vm = "web"
path = "$H"
relpath = "demo.softxs.ch/hydro"
type = "rails"

[[app]]
name = "www"
description = "SoftXS Web Site"
server = "zg-3.softxs.ch"
vm = "web"
path = "$W"
relpath = "www.softxs.ch"
type = "files"
[app.files]
paths = ["."]
exclude = ["*_test.go"]

[[app]]
name = "tracking"
description = "Tracking System"
server = "zg-3.softxs.ch"
vm = "intern"
path = "$G"
relpath = "intern.softxs.ch/tracking"
type = "git"

[[app]]
name = "wiki"
description = "Wiki (its data directory is missing: this backup fails on purpose)"
server = "zg-3.softxs.ch"
vm = "intern"
path = "$D/apps/home/wiki/www/html"
relpath = "wiki.softxs.ch"
type = "moinmoin"

[[backup_server]]
name = "odin.softxs.ch"
partition = "$D/odin/v01/backup"
pulls = ["zg-3.softxs.ch"]
identity = "$D/ssh/id_odin"
known_hosts = "$D/ssh/known_hosts"
TOML
V2="$BIN --config $D/v2backup.toml --server zg-3.softxs.ch"
$V2 inventory

step "3. the host daemon"
$V2 serve >"$D/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 100); do grep -q "msg=serving" "$D/daemon.log" && break; sleep 0.1; done
grep -E "mounted|serving" "$D/daemon.log" | sed 's/^time=[^ ]* //'
echo "VM web sees:    $(ls -A "$D/mnt/web" | tr '\n' ' ')"
echo "VM intern sees: $(ls -A "$D/mnt/intern" | tr '\n' ' ')"

step "4. application backups through the mounts (as the VMs' nightly jobs would)"
$V2 backup hydro --target "$D/mnt/web"
$V2 backup www --target "$D/mnt/web"
$V2 backup tracking --target "$D/mnt/intern"
$V2 backup wiki --target "$D/mnt/intern" || echo "(the wiki backup failed, as planned: the previous backup stays and the failure is recorded)"
echo "a VM cannot write outside its applications:"
touch "$D/mnt/web/evil" 2>&1 | sed 's/^/  /' || true
ln -s /etc/passwd "$D/mnt/web/demo.softxs.ch/hydro/escape" 2>&1 | sed 's/^/  /' || true
echo "what landed on the partition:"
(cd "$P/local" && find . -maxdepth 4 -mindepth 1 -type d | sort | sed 's/^/  /' | head -20)
sleep 2 # let the quiet time pass before the snapshot

step "5. a snapshot, browsed and verified"
$V2 snapshot || true
echo "VM web's history: $(ls "$D/mnt/web/.history" | tr '\n' ' ')"
ls "$D/mnt/web/.history/latest/demo.softxs.ch/hydro/db" | sed 's/^/  db: /'
echo "history file:"; sed 's/^/  /' "$P/history/"backup-hydro-*
$V2 verify | tail -1

step "6. the backup server pulls over ssh"
# The remote view moves to the new snapshot once no pull is using it.
SNAP=$(basename "$(readlink "$P/snapshots/local/latest")")
for _ in $(seq 300); do grep -q "remote view now shows snapshot.*snapshot=$SNAP" "$D/daemon.log" && break; sleep 0.1; done
echo "remote view: $(ls "$D/view" | tr '\n' ' ')"
ODIN="$BIN --config $D/v2backup.toml --server odin.softxs.ch"
$ODIN pull
(cd "$D/odin/v01/backup/remote/zg-3.softxs.ch" && sha256sum --quiet -c SHA256SUMS && echo "sha256sum -c SHA256SUMS on the backup server: OK")
$ODIN verify | tail -1

step "7. an off-site copy (a directory standing in for a USB drive)"
mkdir -p "$D/usb"
$ODIN offsite --to "$D/usb" --label "demo-usb-1"
$ODIN offsite status

step "8. status, check, copies and the status page"
$V2 status
echo
echo "\$ v2backup check   # a Nagios/Icinga plugin: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN"
rc=0; $V2 check || rc=$?
echo "(exit $rc: the wiki backup failed on purpose)"
echo
echo "\$ v2backup check   # on the backup server: every host it pulls, from the catalog shipped with the pull"
rc=0; $ODIN check || rc=$?
echo "(exit $rc)"
echo
echo "\$ v2backup copies hydro   # where are the verified copies of last night?"
$ODIN copies hydro
URL=$(grep -o 'status page and metrics at http://[^/]*/' "$D/daemon.log" | head -1 | sed 's/.* at //')
if [ -n "$URL" ]; then
	curl -fsS "$URL" -o /tmp/v2backup-demo-status.html
	echo
	echo "status page: $URL   (metrics: ${URL}metrics; $(curl -fsS "${URL}metrics" | grep -c '^v2backup_') v2backup series)"
	echo "a copy of the page, to open after the demo: /tmp/v2backup-demo-status.html"
	if [ "${DEMO_KEEP:-}" = 1 ]; then
		read -r -p "the daemon keeps running; press Enter to stop and clean up " _
	fi
fi
