# Sourced by the scripts that start test servers in the background
# (registry.sh, pebble.sh): checking and stopping them by pid file.

# alive PID: the process exists and is not a zombie.
alive() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# stop_pid FILE: TERM the process named in FILE, wait up to 5 s, then KILL.
stop_pid() {
  local file="$1" pid i
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if [ -n "$pid" ] && alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 20); do alive "$pid" || break; sleep 0.1; done
    fi
  fi
  rm -f "$file"
}
