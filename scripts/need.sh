# Sourced by the scripts: `need CMD PACKAGE ...` installs each Debian
# package whose command is missing (apt-get update only when an install
# fails on old package lists). Pairs: `need redis-server redis-server
# tmux tmux`. A command starting with `lib:` is a pkg-config name.
need() {
  local missing="" sudo=""
  while [ $# -ge 2 ]; do
    case "$1" in
      lib:*) pkg-config --exists "${1#lib:}" 2>/dev/null || missing="$missing $2" ;;
      pkg:*) dpkg -s "${1#pkg:}" >/dev/null 2>&1 || missing="$missing $2" ;;
      *) command -v "$1" >/dev/null || missing="$missing $2" ;;
    esac
    shift 2
  done
  [ -n "$missing" ] || return 0
  echo "== installing$missing"
  [ "$(id -u)" = 0 ] || sudo="sudo"
  # shellcheck disable=SC2086
  $sudo apt-get install -y $missing >/dev/null 2>&1 ||
    { $sudo apt-get update >/dev/null && $sudo apt-get install -y $missing >/dev/null; }
}
