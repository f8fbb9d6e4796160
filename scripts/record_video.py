"""Record a whole tmux window (every pane, with a caption naming it) as an H.264 MP4.

Two steps, so the stack can be stopped between them and the clock stays the demo's:

    python scripts/record_video.py capture --socket SOCK --duration 20 --out frames.jsonl
    python scripts/record_video.py render frames.jsonl --out demo.mp4 [--text frames.txt]

`capture` runs `tmux capture-pane -p -e` (colours kept) on each pane every 0.5 s and writes one
JSON line per frame: the window size and each pane's geometry, title and captured text.
`render` replays each pane's text into a terminal screen (pyte) of the pane's size, composes the
window (a caption bar over each pane, the separators tmux would draw), paints it with a monospace
font (DejaVu Sans Mono, shipped by matplotlib) through Pillow, and encodes the frames with the
FFmpeg libraries PyAV's wheels carry (libx264, yuv420p: what browsers and players open).
`--text` writes the composed screens as plain text, one block per frame, so a test (or a person)
can check what the video shows without OCR.

scripts/demo.sh --video FILE runs both steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

FPS = 2                     # one frame per capture: tmux panes change at human speed
INTERVAL_S = 1.0 / FPS

# The xterm palette, so a pane's named colours look as they do in a terminal.
NAMED = {
    "black": (0, 0, 0), "red": (205, 49, 49), "green": (13, 188, 121),
    "brown": (229, 229, 16), "yellow": (229, 229, 16), "blue": (36, 114, 200),
    "magenta": (188, 63, 188), "cyan": (17, 168, 205), "white": (229, 229, 229),
    "brightblack": (102, 102, 102), "brightred": (241, 76, 76),
    "brightgreen": (35, 209, 139), "brightbrown": (245, 245, 67),
    "brightyellow": (245, 245, 67), "brightblue": (59, 142, 234),
    "brightmagenta": (214, 112, 214), "brightcyan": (41, 184, 219),
    "brightwhite": (255, 255, 255),
}
DEFAULT_FG = (220, 220, 220)
DEFAULT_BG = (16, 16, 20)
CAPTION_FG = (16, 16, 20)
CAPTION_BG = (120, 190, 255)
BORDER_FG = (90, 90, 110)


@dataclass
class Pane:
    """One pane as tmux reports it: cell geometry in the window, its title, its captured text."""

    id: str
    title: str
    left: int
    top: int
    width: int
    height: int
    text: str


@dataclass
class Frame:
    """One capture of the whole window."""

    t: float
    width: int
    height: int
    panes: list[Pane]


def _tmux(socket: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], check=True, capture_output=True,
                          text=True, timeout=5).stdout


def capture_once(socket: str, t: float) -> Frame:
    """Capture every pane of the server's (one) window: its geometry first, then each text."""
    fmt = "#{pane_id}\t#{pane_left}\t#{pane_top}\t#{pane_width}\t#{pane_height}\t#{pane_title}"
    size = _tmux(socket, "display-message", "-p", "#{window_width}\t#{window_height}").split()
    panes = []
    for line in _tmux(socket, "list-panes", "-F", fmt).splitlines():
        pid, left, top, width, height, title = line.split("\t", 5)
        text = _tmux(socket, "capture-pane", "-p", "-e", "-t", pid)
        panes.append(Pane(pid, title, int(left), int(top), int(width), int(height), text))
    return Frame(t, int(size[0]), int(size[1]), panes)


def capture(socket: str, duration: float, out: Path) -> int:
    """Capture every INTERVAL_S for duration seconds into out (JSON lines); returns the count.

    The clock is fixed: a capture that runs late repeats the previous frame for the slots it
    missed, so the video's length is the wall-clock length. A server that goes away ends it.
    """
    start = time.monotonic()
    slots = max(1, round(duration * FPS))
    written = 0
    last: dict | None = None
    with out.open("w") as f:
        for slot in range(slots):
            delay = start + slot * INTERVAL_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif last is not None and -delay >= INTERVAL_S:
                f.write(json.dumps(last) + "\n")    # this slot's time has passed already
                written += 1
                continue
            try:
                frame = capture_once(socket, time.monotonic() - start)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                break
            last = {"t": round(frame.t, 3), "width": frame.width, "height": frame.height,
                    "panes": [vars(p) for p in frame.panes]}
            f.write(json.dumps(last) + "\n")
            written += 1
    return written


def read_frames(path: Path) -> Iterator[Frame]:
    """The frames capture() wrote."""
    with path.open() as f:
        for line in f:
            d = json.loads(line)
            yield Frame(d["t"], d["width"], d["height"], [Pane(**p) for p in d["panes"]])


def font_path() -> str:
    """A monospace TTF: DejaVu Sans Mono from matplotlib (a PyPI wheel), else a system one."""
    try:
        import matplotlib
        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansMono.ttf"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
                 "/usr/share/fonts/dejavu/DejaVuSansMono.ttf"):
        if os.path.exists(path):
            return path
    raise RuntimeError("no monospace font: pip install matplotlib or apt-get install "
                       "fonts-dejavu-core")


def _rgb(colour: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
    if colour == "default":
        return default
    if colour in NAMED:
        return NAMED[colour]
    if len(colour) == 6:
        try:
            return (int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16))
        except ValueError:
            pass
    return default


# A cell of the composed window: character, fg, bg, bold.
Cell = tuple[str, tuple[int, int, int], tuple[int, int, int], bool]


def compose(frame: Frame) -> list[list[Cell]]:
    """The window as tmux shows it: each pane's screen, a caption bar on the row above each pane
    (tmux's top border row) and a separator in the column between side-by-side panes."""
    import pyte

    blank: Cell = (" ", DEFAULT_FG, DEFAULT_BG, False)
    grid = [[blank] * frame.width for _ in range(frame.height)]
    for pane in frame.panes:
        screen = pyte.Screen(pane.width, pane.height)
        stream = pyte.Stream(screen)
        # capture-pane ends every row with \n; a terminal needs \r\n, and no newline after the
        # last row (it would scroll the first one away).
        stream.feed(pane.text.rstrip("\n").replace("\n", "\r\n"))
        for y in range(pane.height):
            gy = pane.top + y
            if not 0 <= gy < frame.height:
                continue
            row = screen.buffer[y]
            for x in range(pane.width):
                gx = pane.left + x
                if not 0 <= gx < frame.width:
                    continue
                ch = row[x]
                fg = _rgb(ch.fg, DEFAULT_FG)
                bg = _rgb(ch.bg, DEFAULT_BG)
                if ch.reverse:
                    fg, bg = bg, fg
                grid[gy][gx] = (ch.data or " ", fg, bg, ch.bold)
        if pane.left > 0:       # the separator tmux draws left of a pane
            for y in range(max(0, pane.top - 1), min(frame.height, pane.top + pane.height)):
                grid[y][pane.left - 1] = ("│", BORDER_FG, DEFAULT_BG, False)
        if pane.top > 0:        # the caption: this pane's name on its top border row
            y = pane.top - 1
            caption = f" {pane.title} "
            for x in range(pane.width):
                gx = pane.left + x
                if gx < frame.width:
                    grid[y][gx] = ("─", BORDER_FG, DEFAULT_BG, False)
            for i, c in enumerate(caption):
                gx = pane.left + 1 + i
                if gx < min(frame.width, pane.left + pane.width):
                    grid[y][gx] = (c, CAPTION_FG, CAPTION_BG, True)
    return grid


def text_of(grid: list[list[Cell]]) -> str:
    """The composed window as plain text: what the video shows, readable by a test."""
    return "\n".join("".join(c[0] for c in row).rstrip() for row in grid)


class Painter:
    """Paints composed windows with Pillow: one font size whose advance is a whole pixel count,
    so a run of characters drawn as one string stays on the cell grid."""

    def __init__(self, cell_width: int = 8) -> None:
        from PIL import ImageFont

        path = font_path()
        probe = ImageFont.truetype(path, 100)
        size = 100 * cell_width / probe.getlength("M")     # the size whose advance is cell_width
        self.font = ImageFont.truetype(path, size)
        self.bold = ImageFont.truetype(path.replace("Mono.ttf", "Mono-Bold.ttf"), size) \
            if os.path.exists(path.replace("Mono.ttf", "Mono-Bold.ttf")) else self.font
        ascent, descent = self.font.getmetrics()
        self.cw = cell_width
        self.ch = ascent + descent + 1

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The image size of a window of width x height cells, even (yuv420p needs it)."""
        w, h = width * self.cw, height * self.ch
        return w + w % 2, h + h % 2

    def paint(self, grid: list[list[Cell]], size: tuple[int, int]):
        """One RGB image of the grid, size pixels (cropped or padded to it)."""
        from PIL import Image, ImageDraw

        img = Image.new("RGB", size, DEFAULT_BG)
        draw = ImageDraw.Draw(img)
        for y, row in enumerate(grid):
            py = y * self.ch
            x = 0
            while x < len(row):
                _, fg, bg, bold = row[x]
                end = x + 1
                while end < len(row) and row[end][1:] == (fg, bg, bold):
                    end += 1
                if bg != DEFAULT_BG:
                    draw.rectangle([x * self.cw, py, end * self.cw - 1, py + self.ch - 1],
                                   fill=bg)
                run = "".join(c[0] for c in row[x:end])
                if run.strip():
                    draw.text((x * self.cw, py), run, fill=fg,
                              font=self.bold if bold else self.font)
                x = end
        return img


def render(frames: Iterable[Frame], out: Path, text_out: Path | None = None,
           cell_width: int = 8) -> int:
    """Encode frames as an H.264 MP4 at FPS; the first frame fixes the size. Returns the count."""
    import av

    painter = Painter(cell_width)
    container = av.open(str(out), mode="w")
    stream = None
    size = (0, 0)
    count = 0
    text_file = text_out.open("w") if text_out else None
    try:
        for frame in frames:
            grid = compose(frame)
            if stream is None:
                size = painter.size(frame.width, frame.height)
                stream = container.add_stream("libx264", rate=FPS)
                stream.width, stream.height = size
                stream.pix_fmt = "yuv420p"
                # Text on a dark screen: a low CRF keeps the glyphs sharp at a small file size.
                stream.options = {"crf": "23", "preset": "veryfast"}
            video_frame = av.VideoFrame.from_image(painter.paint(grid, size))
            video_frame.pts = count
            for packet in stream.encode(video_frame):
                container.mux(packet)
            if text_file:
                text_file.write(f"=== frame {count + 1} +{frame.t:.1f}s ===\n{text_of(grid)}\n")
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    finally:
        container.close()
        if text_file:
            text_file.close()
    if count == 0:
        out.unlink(missing_ok=True)
    return count


def main(argv: list[str] | None = None) -> int:
    """The command line: capture, then render (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    cap = sub.add_parser("capture", help="capture a tmux window's panes every 0.5 s")
    cap.add_argument("--socket", required=True, help="the tmux server (tmux -L SOCKET)")
    cap.add_argument("--duration", type=float, required=True, help="seconds")
    cap.add_argument("--out", type=Path, required=True, help="frames file (JSON lines)")
    ren = sub.add_parser("render", help="encode captured frames as an H.264 MP4")
    ren.add_argument("frames", type=Path)
    ren.add_argument("--out", type=Path, required=True, help="the .mp4 to write")
    ren.add_argument("--text", type=Path, help="also write the composed screens as text")
    args = parser.parse_args(argv)
    if args.cmd == "capture":
        n = capture(args.socket, args.duration, args.out)
        print(f"record_video: captured {n} frames")
        return 0 if n else 1
    n = render(read_frames(args.frames), args.out, args.text)
    if not n:
        print("record_video: no frames to render", file=sys.stderr)
        return 1
    print(f"record_video: {args.out}: {n} frames, {n / FPS:.1f} s, H.264")
    return 0


if __name__ == "__main__":
    sys.exit(main())
