#!/usr/bin/env bash
# The whole stack in one tmux window: the four processes in four panes, each started on its own
# (`python -m processes.<name> --config FILE`, finding the others by the configured ports and
# segment name), and the live dashboard (`python -m processes.tools.monitor`) in a fifth. After
# --duration seconds every pane gets Ctrl+C (SIGINT), downstream first, and the script checks
# that each process exited 0 and that no /dev/shm segment is left.
#
#   scripts/demo.sh                               # 30 s; attaches to the window in a terminal
#   scripts/demo.sh --duration 60 --record demo.frames
#   scripts/demo.sh --csv data/sample_prices.csv --csv-speed 10
#   scripts/demo.sh --play demo.frames            # replay a recording in this terminal
#   scripts/demo.sh --video demo.mp4 --duration 20   # the whole window as an H.264 MP4
#
# --record FILE captures the dashboard pane every 0.5 s (tmux capture-pane -p -e, colours kept)
# into FILE, one frame after each "=== frame N +S.Ss ===" line; `less -R FILE` shows it too.
# --video FILE records every pane of the window (captions naming each) every 0.5 s and renders
# them with scripts/record_video.py (pyte, Pillow, PyAV: pip install -r requirements.txt) into an
# H.264 MP4; the window is then fixed at 200x62 cells, whatever terminal attaches.
# tmux runs on a private socket (tmux -L tradestack-demo-<pid>): the user's tmux is never touched.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=30
RECORD=""
VIDEO=""
CONFIG=""
CSV=""
CSV_SPEED=""
PLAY=""
ATTACH=auto
WORKDIR=""

usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; cat <<'EOF'
options:
  --duration SECONDS   how long the stack runs (default 30)
  --record FILE        capture the dashboard pane every 0.5 s into FILE
  --video FILE         record the whole window (all five panes) as an H.264 MP4
  --config FILE        use this TOML as is (its ports, shm_name and log dir); default: a
                       generated one with free ports, a private segment name and logs in --workdir
  --csv PATH           replay this price file instead of the random walk (gateway.csv)
  --csv-speed X        its pace multiple (gateway.csv_speed; 0 = as fast as clients drain)
  --workdir DIR        where the generated config and logs go (default: a new directory
                       tradestack-demo.XXXXXX under $TMPDIR or /tmp, kept after the run; the
                       first line the demo prints names it)
  --attach / --no-attach   watch the tmux window here (default: when run in a terminal)
  --play FILE          show a recording made with --record, frame by frame, and exit
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --record) RECORD=$2; shift 2 ;;
        --video) VIDEO=$2; shift 2 ;;
        --config) CONFIG=$2; shift 2 ;;
        --csv) CSV=$2; shift 2 ;;
        --csv-speed) CSV_SPEED=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        --attach) ATTACH=yes; shift ;;
        --no-attach) ATTACH=no; shift ;;
        --play) PLAY=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "demo.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ -n "$PLAY" ]; then
    # Frames are separated by their "=== frame" header lines; show each for 0.5 s.
    frame=""
    while IFS= read -r line || [ -n "$line" ]; do
        if [[ $line == "=== frame "* ]]; then
            if [ -n "$frame" ]; then printf '\033[H\033[2J%s' "$frame"; sleep 0.5; fi
            frame=""
        else
            frame+="$line"$'\n'
        fi
    done < "$PLAY"
    [ -z "$frame" ] || printf '\033[H\033[2J%s' "$frame"
    exit 0
fi

command -v tmux >/dev/null || { echo "demo.sh: tmux is not installed (apt-get install tmux)" >&2; exit 1; }
if [[ ! $DURATION =~ ^[0-9]+([.][0-9]+)?$ ]]; then echo "demo.sh: --duration: seconds" >&2; exit 2; fi
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; else PY=$(command -v python3); fi
fi
if [ -n "$VIDEO" ] && [ -n "$RECORD" ]; then
    echo "demo.sh: --video records every pane already; use it or --record" >&2; exit 2
fi
if [ -n "$VIDEO" ] && ! "$PY" -c 'import av, pyte, PIL' 2>/dev/null; then
    echo "demo.sh: --video needs av, pyte and Pillow: pip install -r requirements.txt" >&2
    exit 1
fi
if ! (cd "$ROOT" && "$PY" -c 'import rich, ext, processes.tools.monitor' 2>/dev/null); then
    echo "demo.sh: $PY cannot import rich/ext: pip install -r requirements.txt &&" \
         "python setup.py build_ext --inplace" >&2
    exit 1
fi
[ -z "$RECORD" ] || RECORD=$(cd "$(dirname "$RECORD")" && pwd)/$(basename "$RECORD")
[ -z "$VIDEO" ] || VIDEO=$(cd "$(dirname "$VIDEO")" && pwd)/$(basename "$VIDEO")
[ -z "$CSV" ] || CSV=$(cd "$(dirname "$CSV")" && pwd)/$(basename "$CSV")

WORKDIR=${WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/tradestack-demo.XXXXXX")}
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
if [ -z "$CONFIG" ]; then
    # Free loopback ports, so the demo runs next to another stack (or a test run).
    read -r P1 P2 P3 < <("$PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
    CONFIG=$WORKDIR/demo.toml
    cat > "$CONFIG" <<EOF
# Written by scripts/demo.sh: every process of the demo reads this file (--config).
[network]
price_port = $P1
news_port = $P2
order_port = $P3

[market]
shm_name = "tradestack_demo_$$"

[gateway]
csv = "$CSV"
csv_speed = ${CSV_SPEED:-1.0}

[order_manager]
order_log = "$WORKDIR/orders.jsonl"

[logging]
dir = "$WORKDIR/logs"
EOF
    CSV=""; CSV_SPEED=""
fi
CONFIG=$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")
# What the processes will use (the file, then the flags below): the monitor needs the same.
EXTRA=()
[ -z "$CSV" ] || EXTRA+=(--set "gateway.csv=$CSV")
[ -z "$CSV_SPEED" ] || EXTRA+=(--set "gateway.csv_speed=$CSV_SPEED")
SHM=$(cd "$ROOT" && "$PY" -c 'import sys; from processes.shared import config
c = config.load(sys.argv[1]); print(c.market.shm_name)' "$CONFIG")
if [ -e "/dev/shm/$SHM" ]; then
    echo "demo.sh: /dev/shm/$SHM exists: is another stack running with $CONFIG?" >&2
    exit 1
fi

SOCK=tradestack-demo-$$
T() { tmux -L "$SOCK" "$@"; }
declare -A PANE
NAMES=(order_manager gateway orderbook strategy)
STOP_ORDER=(strategy orderbook gateway order_manager monitor)

STATUS=$WORKDIR/exit
rm -rf "$STATUS"
mkdir -p "$STATUS"
cmd_for() {   # a runner script per pane; it records the exit code (tmux's is not reliable)
    local script=$WORKDIR/run-$1.sh
    local module=processes.$1
    [ "$1" != monitor ] || module=processes.tools.monitor
    local args=(env -u COLUMNS -u LINES "$PY" -m "$module" --config "$CONFIG")
    [ "$1" != gateway ] || args+=("${EXTRA[@]}")
    {
        echo '#!/usr/bin/env bash'
        echo '# Ctrl+C is for the process: this shell only waits for it, then records its exit code.'
        echo 'trap : INT'
        printf 'cd %q\n' "$ROOT"
        printf '%q ' "${args[@]}"; echo
        printf 'echo $? > %q && mv %q %q\n' "$STATUS/.$1" "$STATUS/.$1" "$STATUS/$1"
    } > "$script"
    printf 'bash %q' "$script"
}

stopped=0
stop_all() {
    [ "$stopped" = 1 ] && return 0
    stopped=1
    local name id status bad=0 waited
    for name in "${STOP_ORDER[@]}"; do
        id=${PANE[$name]:-}
        [ -n "$id" ] || continue
        [ -e "$STATUS/$name" ] || T send-keys -t "$id" C-c 2>/dev/null || true
        waited=0
        while [ ! -e "$STATUS/$name" ]; do
            sleep 0.1; waited=$((waited + 1))
            if [ $waited -ge 150 ]; then echo "demo.sh: $name ignored Ctrl+C for 15 s" >&2; break; fi
        done
        status=$(cat "$STATUS/$name" 2>/dev/null || echo "?")
        echo "  $name exited $status"
        [ "$status" = 0 ] || bad=1
    done
    local socket_path
    socket_path=$(T display-message -p '#{socket_path}' 2>/dev/null || true)
    T kill-server 2>/dev/null || true
    [ -z "$socket_path" ] || rm -f "$socket_path"     # tmux leaves its socket file behind
    if [ -e "/dev/shm/$SHM" ]; then echo "demo.sh: /dev/shm/$SHM left behind" >&2; bad=1; fi
    return $bad
}
trap 'stop_all >/dev/null 2>&1 || true' EXIT
trap 'echo "interrupted; stopping"; stop_all; exit 130' INT TERM

# Window: the dashboard on top (55% of the rows), the four processes in a 2 x 2 grid below it,
# each process pane a fifth of the rows (10 lines at 62 rows, 8 at 45), so its log lines show.
PANE[monitor]=$(T -f /dev/null new-session -d -s demo -x 200 -y 62 -c "$ROOT" -P -F '#{pane_id}' \
    "$(cmd_for monitor)")
T set-option -g remain-on-exit on
# A video keeps the size it was started with: an attaching terminal must not resize the frames.
[ -z "$VIDEO" ] || T set-option -g window-size manual
T set-option -g pane-border-status top
T set-option -g pane-border-format ' #{pane_title} '
T set-option -g status-left-length 40
T set-option -g status-left "[tradestack demo: ${DURATION}s] "
PANE[order_manager]=$(T split-window -v -l 45% -t "${PANE[monitor]}" -c "$ROOT" -P -F '#{pane_id}' \
    "$(cmd_for order_manager)")
sleep 0.5
PANE[gateway]=$(T split-window -h -t "${PANE[order_manager]}" -c "$ROOT" -P -F '#{pane_id}' \
    "$(cmd_for gateway)")
sleep 0.5
PANE[orderbook]=$(T split-window -v -t "${PANE[order_manager]}" -c "$ROOT" -P -F '#{pane_id}' \
    "$(cmd_for orderbook)")
PANE[strategy]=$(T split-window -v -t "${PANE[gateway]}" -c "$ROOT" -P -F '#{pane_id}' \
    "$(cmd_for strategy)")
for name in monitor "${NAMES[@]}"; do T select-pane -t "${PANE[$name]}" -T "$name"; done
# tmux gives a shrinking window's lost rows to the last panes: a terminal smaller than 200x62
# would leave the process panes one line each. Keep the proportions on every resize instead.
relayout="resize-pane -t ${PANE[monitor]} -y 55% ; resize-pane -t ${PANE[order_manager]} -y 22%"
relayout+=" ; resize-pane -t ${PANE[gateway]} -y 22%"
T set-hook -g window-resized "$relayout"
T set-hook -g client-attached "$relayout"
T select-pane -t "${PANE[monitor]}"

echo "demo: config $CONFIG, logs under $WORKDIR, tmux socket $SOCK (tmux -L $SOCK attach)"

driver() {   # runs the clock (and the recorders), then stops everything
    local start now frame=0
    if [ -n "$VIDEO" ]; then
        # The video capture is the clock: it captures all panes for DURATION seconds.
        (cd "$ROOT" && "$PY" scripts/record_video.py capture --socket "$SOCK" \
            --duration "$DURATION" --out "$WORKDIR/video.jsonl") || echo "demo: capture failed"
    fi
    start=$(date +%s.%N)
    [ -z "$RECORD" ] || : > "$RECORD"
    while [ -z "$VIDEO" ]; do
        now=$(date +%s.%N)
        if awk -v a="$now" -v b="$start" -v d="$DURATION" 'BEGIN { exit !(a - b >= d) }'; then break; fi
        if [ -n "$RECORD" ]; then
            frame=$((frame + 1))
            printf '=== frame %d +%.1fs ===\n' "$frame" "$(awk -v a="$now" -v b="$start" 'BEGIN { print a - b }')" >> "$RECORD"
            T capture-pane -p -e -t "${PANE[monitor]}" >> "$RECORD" 2>/dev/null || break
        fi
        sleep 0.5
    done
    echo "demo: $DURATION s elapsed; stopping each process with Ctrl+C"
    stop_all
}

if [ "$ATTACH" = auto ]; then
    if [ -t 0 ] && [ -t 1 ] && [ -z "${TMUX:-}" ]; then ATTACH=yes; else ATTACH=no; fi
fi
if [ "$ATTACH" = yes ]; then
    driver > "$WORKDIR/demo-driver.log" 2>&1 &
    driver_pid=$!
    T attach -t demo || true        # returns when the driver stops the server (or on detach)
    status=0; wait "$driver_pid" || status=$?
    cat "$WORKDIR/demo-driver.log"
else
    status=0; driver || status=$?
fi
trap - EXIT INT TERM

echo "demo: summary from the processes' final snapshots"
(cd "$ROOT" && "$PY" -c 'import sys
from processes.shared import config, telemetry
from processes.supervisor import summary
c = config.load(sys.argv[1])
print(summary.render(summary.build(telemetry.read_all(
    telemetry.stats_dir(c.logging.dir, c.logging.stats_dir)))))' "$CONFIG") || true
[ -z "$RECORD" ] || echo "demo: recording in $RECORD ($(grep -c '^=== frame' "$RECORD") frames;" \
    "play it with scripts/demo.sh --play $RECORD)"
if [ -n "$VIDEO" ]; then
    echo "demo: rendering the video"
    if [ -s "$WORKDIR/video.jsonl" ] && (cd "$ROOT" && "$PY" scripts/record_video.py render \
            "$WORKDIR/video.jsonl" --out "$VIDEO" --text "$WORKDIR/video.txt"); then
        echo "demo: video in $VIDEO (its screens as text: $WORKDIR/video.txt)"
    else
        echo "demo.sh: no video written" >&2; status=1
    fi
fi
if [ "$status" = 0 ]; then echo "demo: clean stop, nothing left in /dev/shm"; fi
exit "$status"
