# Shared by scripts/test, scripts/quickstart and scripts/bench*: install steps, each idempotent.

DEBIAN_PACKAGES=(
  postgresql-15 postgresql-client-15 openssh-server docker.io busybox-static
  prometheus-alertmanager prometheus restic pgbackrest sudo procps iproute2 chromium systemd groff-base
)

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root for: $*" >&2; return 1; fi
}

ensure_debian_packages() {
  local missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    # Do not let package scripts start services: the tests start their own on loopback.
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    as_root rm -f /usr/sbin/policy-rc.d
  fi
}

ensure_venv() {
  local extras="${1:-}"
  local stamp=".venv/.installed-${extras:-base}"
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  # An install with the test extras (from ./scripts/test) already holds everything the base needs.
  if [ -z "$extras" ] && [ -f .venv/.installed-test ] && [ ! pyproject.toml -nt .venv/.installed-test ]; then
    return 0
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "== installing recoverctl into .venv${extras:+ (with $extras extras)}"
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e ".${extras:+[$extras]}"
    touch "$stamp"
  fi
}
