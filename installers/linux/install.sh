#!/bin/sh
# lightagent silent installer for Linux guests (x86_64). No prompts; POSIX sh + coreutils.
#
#   install.sh --svm wss://svm.example:7443 --token T --ca ca.pem [--config FILE] [--fail-closed]
#   install.sh --upgrade [--binary FILE]          new binary; config, cache, queue, quarantine kept
#   install.sh --uninstall [--removal-password P] [--purge]
#   install.sh --config-only --prefix /usr ...   settings only (the .deb's postinst uses this)
#
# Every setting has an environment variable (for cloud-init, MDM and deployment tools):
#   LIGHTAGENT_SVM_URL, LIGHTAGENT_TOKEN, LIGHTAGENT_TOKEN_FILE, LIGHTAGENT_CA,
#   LIGHTAGENT_INSTALL_CONFIG, LIGHTAGENT_FAIL_CLOSED=1, LIGHTAGENT_ALLOW_PLAIN_WS=1,
#   LIGHTAGENT_BINARY, LIGHTAGENT_BINARY_URL, LIGHTAGENT_BINARY_SHA256,
#   LIGHTAGENT_REMOVAL_PASSWORD, LIGHTAGENT_PREFIX, LIGHTAGENT_ROOT, LIGHTAGENT_NO_START=1.
# Flags win over the environment. docs/install.md has the whole reference.
#
# The last line on stdout is one summary line for deployment logs, also appended to
# <root>/var/log/lightagent/install.log:
#   lightagent-install: ok action=install version=0.1.0 bin=/usr/local/bin/lightagent service=started(systemd) ...
#   lightagent-install: FAILED exit=3 action=install reason="..."
# Exit codes: 0 done, 1 a step failed, 2 usage, 3 missing or invalid settings, 4 not installed
# (upgrade/uninstall), 5 removal password missing or wrong, 6 needs root, 7 unsupported system or
# unusable binary.
set -u
# System directories made here get the usual 0755; private files are made 0600 under umask 077.
umask 022

T0=$(date +%s)
ACTION=install
SVM=${LIGHTAGENT_SVM_URL:-}
TOKEN=${LIGHTAGENT_TOKEN:-}
TOKEN_FILE=${LIGHTAGENT_TOKEN_FILE:-}
CA=${LIGHTAGENT_CA:-}
CONFIG_SRC=${LIGHTAGENT_INSTALL_CONFIG:-}
FAIL_CLOSED=${LIGHTAGENT_FAIL_CLOSED:-0}
ALLOW_PLAIN=${LIGHTAGENT_ALLOW_PLAIN_WS:-0}
BINARY=${LIGHTAGENT_BINARY:-}
BINARY_URL=${LIGHTAGENT_BINARY_URL:-}
BINARY_SHA256=${LIGHTAGENT_BINARY_SHA256:-}
REMOVAL_PW=${LIGHTAGENT_REMOVAL_PASSWORD:-}
PREFIX=${LIGHTAGENT_PREFIX:-}
ROOT=${LIGHTAGENT_ROOT:-/}
NO_START=${LIGHTAGENT_NO_START:-0}
PURGE=0
QUIET=0
SERVICE=none
VERSION=
TMPF=

SCRIPT_DIR=$(cd "$(dirname "$0")" 2>/dev/null && pwd) || SCRIPT_DIR=.

say() { [ "$QUIET" = 1 ] || printf '%s\n' "lightagent-install: $*" >&2; }

summary() {
  # $1 = line; printed last on stdout and appended to the install log.
  printf '%s\n' "$1"
  if [ -n "${R+x}" ] && mkdir -p "$R/var/log/lightagent" 2>/dev/null; then
    chmod 0700 "$R/var/log/lightagent" 2>/dev/null
    printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" >>"$R/var/log/lightagent/install.log" 2>/dev/null
  fi
}

die() {
  # die EXIT REASON
  [ -n "$TMPF" ] && rm -f "$TMPF"
  reason=$(printf '%s' "$2" | tr '\n"' " '")
  say "error: $2"
  summary "lightagent-install: FAILED exit=$1 action=$ACTION host=$(hostname 2>/dev/null || echo -) reason=\"$reason\""
  exit "$1"
}

usage() {
  cat <<'EOF'
Usage: install.sh [--svm URL] [--token T | --token-file F] [--ca FILE] [--config FILE]
                  [--fail-closed] [--allow-plain-ws] [--binary FILE | --binary-url URL [--sha256 HEX]]
                  [--removal-password P] [--prefix DIR] [--root DIR] [--no-start] [--quiet]
       install.sh --upgrade [--binary FILE | --binary-url URL [--sha256 HEX]] [--root DIR]
       install.sh --uninstall [--removal-password P] [--purge] [--root DIR]
       install.sh --config-only [settings as for an install] [--prefix DIR] [--root DIR]
Exit: 0 done, 1 step failed, 2 usage, 3 settings, 4 not installed, 5 removal password,
      6 needs root, 7 unsupported system or binary.
EOF
}

need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die 2 "$1 needs a value"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --svm) need_arg "$@"; SVM=$2; shift 2 ;;
    --token) need_arg "$@"; TOKEN=$2; shift 2 ;;
    --token-file) need_arg "$@"; TOKEN_FILE=$2; shift 2 ;;
    --ca) need_arg "$@"; CA=$2; shift 2 ;;
    --config) need_arg "$@"; CONFIG_SRC=$2; shift 2 ;;
    --fail-closed) FAIL_CLOSED=1; shift ;;
    --allow-plain-ws) ALLOW_PLAIN=1; shift ;;
    --binary) need_arg "$@"; BINARY=$2; shift 2 ;;
    --binary-url) need_arg "$@"; BINARY_URL=$2; shift 2 ;;
    --sha256) need_arg "$@"; BINARY_SHA256=$2; shift 2 ;;
    --removal-password) need_arg "$@"; REMOVAL_PW=$2; shift 2 ;;
    --prefix) need_arg "$@"; PREFIX=$2; shift 2 ;;
    --root) need_arg "$@"; ROOT=$2; shift 2 ;;
    --no-start) NO_START=1; shift ;;
    --upgrade) ACTION=upgrade; shift ;;
    --config-only) ACTION=config; shift ;;
    --uninstall) ACTION=uninstall; shift ;;
    --purge) PURGE=1; shift ;;
    --quiet) QUIET=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die 2 "unknown option $1" ;;
  esac
done

# --- where things go -------------------------------------------------------------------------
case "$ROOT" in /*) ;; *) die 2 "--root must be an absolute path (got $ROOT)" ;; esac
R=${ROOT%/}
[ -z "$R" ] || [ -d "$R" ] || die 2 "--root $ROOT is not a directory"
ETC=$R/etc/lightagent
CONF=$ETC/agent.yaml
RECORD=$ETC/install.env
HASHF=$ETC/removal.hash
UNIT=$R/etc/systemd/system/lightagent.service
SCAN_UNIT=$R/etc/systemd/system/lightagent-scan.service
SCAN_TIMER=$R/etc/systemd/system/lightagent-scan.timer
DESKTOP=$R/etc/xdg/autostart/lightagent-tray.desktop
LOGDIR=$R/var/log/lightagent
PIDFILE=$R/run/lightagent.pid

# An earlier install's prefix wins for upgrade/uninstall (the binary is where it was put).
if [ -f "$RECORD" ]; then
  rec_prefix=$(sed -n 's/^PREFIX=//p' "$RECORD" | head -n 1)
  if [ -z "$PREFIX" ]; then PREFIX=$rec_prefix; fi
fi
[ -n "$PREFIX" ] || PREFIX=/usr/local
case "$PREFIX" in /*) ;; *) die 2 "--prefix must be an absolute path (got $PREFIX)" ;; esac
case "$PREFIX" in *[!A-Za-z0-9/._-]*) die 2 "--prefix may hold only letters, digits and / . _ -" ;; esac
PREFIX=${PREFIX%/}
BIN_T=$PREFIX/bin/lightagent        # path on the target system
BIN=$R$BIN_T                        # path from here

# --- checks ----------------------------------------------------------------------------------
if [ -z "$R" ] && [ "$(id -u)" != 0 ]; then die 6 "run as root (or with --root DIR to prepare an image)"; fi
[ "$(uname -s)" = Linux ] || die 7 "Linux only (this is $(uname -s))"
case "$(uname -m)" in x86_64|amd64) ;; *) die 7 "x86_64 only (this is $(uname -m))" ;; esac
if [ "$ACTION" != install ] && [ "$ACTION" != config ] && { [ -n "$SVM$TOKEN$TOKEN_FILE$CA$CONFIG_SRC" ] || [ "$FAIL_CLOSED" = 1 ]; }; then
  die 2 "--$ACTION keeps the installed configuration: settings (--svm, --token, --ca, --config, --fail-closed) are for an install"
fi
[ "$PURGE" = 0 ] || [ "$ACTION" = uninstall ] || die 2 "--purge goes with --uninstall"

installed() { [ -x "$BIN" ] && [ -f "$RECORD" ]; }
systemd_up() { [ -z "$R" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# --- the service -----------------------------------------------------------------------------
stop_service() {
  if [ -n "$R" ]; then return 0; fi
  if systemd_up; then
    systemctl disable --now lightagent.service >/dev/null 2>&1 || true
  fi
  if [ -f "$PIDFILE" ]; then
    pid=$(head -c 16 "$PIDFILE" | tr -cd 0-9)
    if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'lightagent run'; then
      kill -TERM "$pid" 2>/dev/null
      i=0
      while kill -0 "$pid" 2>/dev/null && [ $i -lt 40 ]; do sleep 0.5; i=$((i + 1)); done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
  fi
}

start_service() {
  if [ -n "$R" ]; then SERVICE="not-started(--root)"; return 0; fi
  if [ "$NO_START" = 1 ]; then SERVICE="not-started(--no-start)"; return 0; fi
  if systemd_up; then
    systemctl daemon-reload || die 1 "systemctl daemon-reload failed"
    systemctl enable lightagent.service >/dev/null 2>&1 || die 1 "systemctl enable lightagent.service failed"
    systemctl restart lightagent.service || die 1 "systemctl restart lightagent.service failed (journalctl -u lightagent)"
    SERVICE="started(systemd)"
    return 0
  fi
  # No systemd as PID 1 (containers, minimal guests): run the daemon directly.
  stop_service
  mkdir -p "$LOGDIR" "$R/run" && chmod 0700 "$LOGDIR"
  nohup "$BIN" run --config /etc/lightagent/agent.yaml </dev/null >>"$LOGDIR/agent.log" 2>&1 &
  echo $! >"$PIDFILE"
  sleep 1
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    die 1 "the daemon exited at once; see $LOGDIR/agent.log"
  fi
  say "systemd is not running: started the daemon directly (pid $(cat "$PIDFILE"), log $LOGDIR/agent.log); it will not start again at boot unless your init runs: $BIN_T run --config /etc/lightagent/agent.yaml"
  SERVICE="started(direct,no-systemd)"
}

# --- the binary ------------------------------------------------------------------------------
fetch_binary() {
  # Sets NEW to a checked binary to install (a temp file next to the target), or empty.
  NEW=
  src=$BINARY
  if [ -z "$src" ] && [ -z "$BINARY_URL" ]; then
    for c in "$SCRIPT_DIR/lightagent-linux-x64" "$SCRIPT_DIR/lightagent" "$SCRIPT_DIR/../../dist/lightagent-linux-x64"; do
      if [ -f "$c" ]; then src=$c; break; fi
    done
  fi
  mkdir -p "$R$PREFIX/bin" || die 1 "cannot create $R$PREFIX/bin"
  TMPF=$R$PREFIX/bin/.lightagent.new.$$
  rm -f "$TMPF"
  if [ -n "$BINARY_URL" ]; then
    case "$BINARY_URL" in
      https://*) ;;
      http://*) [ -n "$BINARY_SHA256" ] || die 3 "--binary-url over plain http needs --sha256" ;;
      *) die 2 "--binary-url must be an http(s) URL" ;;
    esac
    if command -v curl >/dev/null 2>&1; then
      curl -fsSL --retry 5 --retry-delay 2 --max-time 600 -o "$TMPF" "$BINARY_URL" || die 1 "download of $BINARY_URL failed"
    elif command -v wget >/dev/null 2>&1; then
      wget -q -T 60 -t 5 -O "$TMPF" "$BINARY_URL" || die 1 "download of $BINARY_URL failed"
    else
      die 7 "neither curl nor wget to download $BINARY_URL"
    fi
  elif [ -n "$src" ]; then
    [ -f "$src" ] || die 7 "binary $src not found"
    cp "$src" "$TMPF" || die 1 "cannot copy $src to $R$PREFIX/bin"
  else
    TMPF=
    return 0
  fi
  if [ -n "$BINARY_SHA256" ]; then
    got=$(sha256sum "$TMPF" | cut -d' ' -f1)
    [ "$got" = "$(printf '%s' "$BINARY_SHA256" | tr 'A-F' 'a-f')" ] || die 7 "binary checksum $got is not the expected $BINARY_SHA256"
  fi
  chmod 0755 "$TMPF"
  v=$("$TMPF" version 2>/dev/null) || die 7 "the binary does not run on this system ($("$TMPF" version 2>&1 | head -n 1))"
  case "$v" in [0-9]*.[0-9]*) ;; *) die 7 "the binary printed no version ($v)" ;; esac
  VERSION=$v
  NEW=$TMPF
}

put_binary() {
  # Replace atomically: a running daemon keeps its (old) file until it restarts.
  mv -f "$NEW" "$BIN" || die 1 "cannot install $BIN"
  TMPF=
  [ "$(id -u)" != 0 ] || chown 0:0 "$BIN"
  chmod 0755 "$BIN"
}

# --- installed files -------------------------------------------------------------------------
write_unit() {
  mkdir -p "$R/etc/systemd/system" || die 1 "cannot create $R/etc/systemd/system"
  chmod 0755 "$R/etc/systemd/system" 2>/dev/null
  "$BIN" install-helper unit lightagent.service >"$UNIT.tmp" || die 7 "this binary carries no systemd unit"
  sed -i "s#^ExecStart=/usr/local/bin/lightagent #ExecStart=$BIN_T #" "$UNIT.tmp"
  chmod 0644 "$UNIT.tmp" && mv -f "$UNIT.tmp" "$UNIT" || die 1 "cannot write $UNIT"
  # The scheduled-scan timer, shipped disabled: the alternative to scan_schedule (docs/scans.md).
  for u in "$SCAN_UNIT" "$SCAN_TIMER"; do
    "$BIN" install-helper unit "$(basename "$u")" >"$u.tmp" || die 7 "this binary carries no unit $(basename "$u")"
    sed -i "s#^ExecStart=/usr/local/bin/lightagent #ExecStart=$BIN_T #" "$u.tmp"
    chmod 0644 "$u.tmp" && mv -f "$u.tmp" "$u" || die 1 "cannot write $u"
  done
}

write_desktop() {
  mkdir -p "$R/etc/xdg/autostart" || die 1 "cannot create $R/etc/xdg/autostart"
  chmod 0755 "$R/etc/xdg" "$R/etc/xdg/autostart" 2>/dev/null
  cat >"$DESKTOP.tmp" <<EOF
[Desktop Entry]
Type=Application
Name=lightagent
Comment=lightagent protection status
Exec=$BIN_T tray
Icon=security-high
Terminal=false
NoDisplay=true
X-GNOME-Autostart-enabled=true
EOF
  chmod 0644 "$DESKTOP.tmp" && mv -f "$DESKTOP.tmp" "$DESKTOP" || die 1 "cannot write $DESKTOP"
}

yaml_quote() {
  # A YAML double-quoted scalar; control characters are refused by the caller.
  printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

has_ctl() { printf '%s' "$1" | LC_ALL=C grep -q '[[:cntrl:]]'; }

write_config() {
  # Writes $CONF from --config and the settings; keeps an existing config when nothing is given.
  if [ -n "$TOKEN_FILE" ]; then
    [ -r "$TOKEN_FILE" ] || die 3 "token file $TOKEN_FILE cannot be read"
    TOKEN=$(head -c 4096 "$TOKEN_FILE" | tr -d '\r\n')
    [ -n "$TOKEN" ] || die 3 "token file $TOKEN_FILE is empty"
  fi
  if [ -z "$SVM$TOKEN$CA$CONFIG_SRC" ] && [ "$FAIL_CLOSED" != 1 ] && [ "$ALLOW_PLAIN" != 1 ]; then
    [ -f "$CONF" ] || die 3 "no settings: pass --svm URL --token T (or LIGHTAGENT_SVM_URL, LIGHTAGENT_TOKEN), or --config FILE"
    say "keeping the installed configuration $CONF"
    return 0
  fi
  for v in "$SVM" "$TOKEN" "$CA"; do has_ctl "$v" && die 3 "settings may not contain control characters or newlines"; done
  if [ -n "$SVM" ]; then
    case "$SVM" in ws://*|wss://*) ;; *) die 3 "--svm must be a ws:// or wss:// URL (got $SVM)" ;; esac
  fi
  mkdir -p -m 0700 "$ETC" && chmod 0700 "$ETC" || die 1 "cannot create $ETC"
  new=$CONF.tmp.$$
  (umask 077 && : >"$new") && chmod 0600 "$new" || die 1 "cannot write $new"
  if [ -n "$CONFIG_SRC" ]; then
    [ -r "$CONFIG_SRC" ] || die 3 "config file $CONFIG_SRC cannot be read"
    if [ -n "$SVM$TOKEN$CA" ] || [ "$FAIL_CLOSED" = 1 ] || [ "$ALLOW_PLAIN" = 1 ]; then
      if sed -n '/[^[:space:]]/{p;q;}' "$CONFIG_SRC" | grep -q '^[[:space:]]*[{[]'; then
        rm -f "$new"
        die 3 "$CONFIG_SRC is JSON: put svm/token/ca in it, or give a YAML file to combine with flags"
      fi
      # Drop the top-level keys the flags replace (and their indented continuation lines).
      keys=
      [ -z "$SVM" ] || keys="$keys|svm"
      [ -z "$TOKEN" ] || keys="$keys|token"
      [ -z "$CA" ] || keys="$keys|ca"
      [ "$FAIL_CLOSED" != 1 ] || keys="$keys|on_svm_unavailable"
      [ "$ALLOW_PLAIN" != 1 ] || keys="$keys|allow_plain_ws"
      keys=${keys#|}
      awk -v re="^($keys):" 'BEGIN{skip=0} { if (re != "^():" && $0 ~ re) {skip=1; next} if (skip && $0 ~ /^[ \t-]/) next; skip=0; print }' "$CONFIG_SRC" >>"$new"
    else
      cat "$CONFIG_SRC" >>"$new"
    fi
  else
    printf '# Written by lightagent install.sh; the agent reads it at start (systemctl restart lightagent).\n' >>"$new"
  fi
  [ -z "$SVM" ] || printf 'svm: %s\n' "$(yaml_quote "$SVM")" >>"$new"
  [ -z "$TOKEN" ] || printf 'token: %s\n' "$(yaml_quote "$TOKEN")" >>"$new"
  if [ -n "$CA" ]; then
    [ -r "$CA" ] || { rm -f "$new"; die 3 "CA file $CA cannot be read"; }
    grep -q -- '-----BEGIN CERTIFICATE-----' "$CA" || { rm -f "$new"; die 3 "CA file $CA holds no PEM certificate"; }
    cp "$CA" "$ETC/ca.pem.tmp" && chmod 0644 "$ETC/ca.pem.tmp" && mv -f "$ETC/ca.pem.tmp" "$ETC/ca.pem" || die 1 "cannot write $ETC/ca.pem"
    printf 'ca: /etc/lightagent/ca.pem\n' >>"$new"
  fi
  [ "$FAIL_CLOSED" != 1 ] || printf 'on_svm_unavailable: deny\n' >>"$new"
  [ "$ALLOW_PLAIN" != 1 ] || printf 'allow_plain_ws: true\n' >>"$new"
  if ! msg=$("$NEW_OR_BIN" install-helper check-config "$new" 2>&1); then
    rm -f "$new"
    die 3 "the configuration is not valid: $msg"
  fi
  mv -f "$new" "$CONF" || die 1 "cannot write $CONF"
}

write_password() {
  [ -n "$REMOVAL_PW" ] || return 0
  h=$(printf '%s' "$REMOVAL_PW" | "$BIN" install-helper hash-password) || die 1 "cannot hash the removal password"
  (umask 077 && printf '%s\n' "$h" >"$HASHF.tmp") && chmod 0600 "$HASHF.tmp" && mv -f "$HASHF.tmp" "$HASHF" || die 1 "cannot write $HASHF"
}

check_password() {
  [ -f "$HASHF" ] || return 0
  [ -n "$REMOVAL_PW" ] || die 5 "this installation is protected by a removal password: pass --removal-password P (or LIGHTAGENT_REMOVAL_PASSWORD)"
  printf '%s' "$REMOVAL_PW" | "$BIN" install-helper verify-password "$HASHF" >/dev/null 2>&1
  case $? in
    0) ;;
    1) sleep 2; die 5 "wrong removal password" ;;
    *) die 1 "cannot check the removal password ($HASHF damaged?)" ;;
  esac
}

state_dir() {
  # The state directory of the installed config (default /var/lib/lightagent), as seen from here.
  sd=
  [ -f "$CONF" ] && sd=$(sed -n 's/^state_dir:[[:space:]]*["'\'']\{0,1\}\([^"'\'' #]*\).*/\1/p' "$CONF" | head -n 1)
  [ -n "$sd" ] || sd=/var/lib/lightagent
  printf '%s' "$R$sd"
}

remove_state() {
  sd=$(state_dir)
  [ -d "$sd" ] || return 0
  case "${sd#"$R"}" in /|/var|/var/lib|/etc|/usr|/home|/root|/tmp) say "state directory ${sd#"$R"} is a system directory: left alone"; return 0 ;; esac
  case "$(basename "$sd")" in
    *lightagent*)
      for e in "$sd"/* "$sd"/.[!.]*; do
        [ -e "$e" ] || [ -L "$e" ] || continue
        if [ "$PURGE" = 1 ] || [ "$(basename "$e")" != quarantine ]; then rm -rf "$e"; fi
      done
      [ "$PURGE" = 1 ] && rmdir "$sd" 2>/dev/null
      ;;
    *)
      # Not a directory of ours by name: remove only what the agent writes there.
      for e in cache.v1 cache.v1.bad cache.seed agent-id agent.lock status.json deferred events control.sock; do rm -rf "${sd:?}/$e"; done
      [ "$PURGE" = 1 ] && rm -rf "${sd:?}/quarantine"
      ;;
  esac
  return 0
}

write_record() {
  printf 'PREFIX=%s\nVERSION=%s\nINSTALLED=%s\n' "$PREFIX" "$VERSION" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$RECORD.tmp" && chmod 0600 "$RECORD.tmp" && mv -f "$RECORD.tmp" "$RECORD" || die 1 "cannot write $RECORD"
}

ok() {
  summary "lightagent-install: ok action=$ACTION version=${VERSION:-?} bin=$BIN_T config=/etc/lightagent/agent.yaml service=$SERVICE root=$ROOT host=$(hostname 2>/dev/null || echo -) seconds=$(( $(date +%s) - T0 ))"
  exit 0
}

# --- actions ---------------------------------------------------------------------------------
case "$ACTION" in
  install)
    fetch_binary
    if [ -z "$NEW" ]; then
      [ -x "$BIN" ] || die 7 "no binary: pass --binary FILE or --binary-url URL (or put lightagent-linux-x64 next to install.sh)"
      VERSION=$("$BIN" version 2>/dev/null) || die 7 "the installed $BIN_T does not run"
      NEW_OR_BIN=$BIN
    else
      NEW_OR_BIN=$NEW
    fi
    mkdir -p -m 0700 "$ETC" && chmod 0700 "$ETC" || die 1 "cannot create $ETC"
    write_config                   # validated by the new binary before anything else changes
    [ -z "$NEW" ] || put_binary
    write_password
    write_unit
    write_desktop
    write_record
    start_service
    ok
    ;;
  config)
    # Settings only, for a binary installed by someone else (the .deb): config and removal password.
    [ -x "$BIN" ] || die 4 "no $BIN_T: install the binary first (or pass --prefix)"
    VERSION=$("$BIN" version 2>/dev/null) || die 7 "$BIN_T does not run"
    NEW_OR_BIN=$BIN
    mkdir -p -m 0700 "$ETC" && chmod 0700 "$ETC" || die 1 "cannot create $ETC"
    write_config
    write_password
    SERVICE=unchanged
    ok
    ;;
  upgrade)
    installed || die 4 "lightagent is not installed under ${ROOT} (no $RECORD): install it first"
    fetch_binary
    [ -n "$NEW" ] || die 7 "no new binary: pass --binary FILE or --binary-url URL"
    NEW_OR_BIN=$NEW
    if [ -f "$CONF" ] && ! msg=$("$NEW" install-helper check-config "$CONF" 2>&1); then
      die 3 "the installed configuration is not valid for the new version (nothing changed): $msg"
    fi
    put_binary
    write_unit
    write_desktop
    write_record
    if [ -z "$R" ] && { systemd_up && systemctl is-enabled lightagent.service >/dev/null 2>&1 || [ -f "$PIDFILE" ]; }; then
      start_service
    else
      SERVICE=unchanged
    fi
    ok
    ;;
  uninstall)
    # After an uninstall, --uninstall --purge still removes what was kept (quarantine, install log).
    { [ -x "$BIN" ] || [ -f "$RECORD" ] || [ -f "$CONF" ] || { [ "$PURGE" = 1 ] && { [ -d "$(state_dir)" ] || [ -d "$LOGDIR" ]; }; }; } || die 4 "lightagent is not installed under ${ROOT}"
    VERSION=$("$BIN" version 2>/dev/null || echo '?')
    check_password
    SD=$(state_dir)
    # An enabled scan timer (docs/scans.md) goes with the agent; an upgrade leaves it as it was.
    if systemd_up; then systemctl disable --now lightagent-scan.timer >/dev/null 2>&1 || true; fi
    stop_service
    remove_state
    rm -f "$BIN" "$UNIT" "$SCAN_UNIT" "$SCAN_TIMER" "$DESKTOP"
    [ -L "$R$PREFIX/bin/lightagent-svm" ] && rm -f "$R$PREFIX/bin/lightagent-svm"
    rm -rf "$ETC"
    rm -f "$LOGDIR/agent.log"
    if [ "$PURGE" = 1 ]; then rm -rf "$LOGDIR"; fi
    if systemd_up; then systemctl daemon-reload >/dev/null 2>&1 || true; fi
    SERVICE=removed
    if [ "$PURGE" = 1 ]; then
      printf '%s\n' "lightagent-install: ok action=uninstall purge=yes version=$VERSION root=$ROOT host=$(hostname 2>/dev/null || echo -) seconds=$(( $(date +%s) - T0 ))"
      exit 0
    fi
    [ -d "$SD/quarantine" ] && say "kept the quarantine in ${SD#"$R"}/quarantine (--purge removes it)"
    ok
    ;;
esac
