"""Progress over rows and slices with an ETA, on stderr: redrawn in place on a terminal, one line
per tenth of the rows in a log. Each row's slice count is known only when it starts (its axis
and box come from its image), so the slice total is extrapolated from the rows seen so far."""

import sys
import time


def _clock(seconds):
    seconds = int(max(0, seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


class BatchProgress:
    def __init__(self, rows, stream=None, width=24):
        self.rows, self.stream, self.width = rows, stream or sys.stderr, width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.per_row = {}  # row number -> (done, total) slices
        self.finished = 0
        self._finished_rows = set()
        self._last_tenth = -1

    def slice_done(self, row, done, total):
        self.per_row[row] = (done, total)
        self._draw()

    def rows_finished(self, numbers):
        self._finished_rows.update(numbers)
        self.finished = len(self._finished_rows)
        self._draw(force=not self.tty)

    def _estimate(self):
        done = sum(d for d, _ in self.per_row.values())
        seen = [t for _, t in self.per_row.values()]
        unseen = max(0, self.rows - len(self._finished_rows | set(self.per_row)))
        total = sum(seen) + (sum(seen) / len(seen) * unseen if seen else 0)
        return done, max(total, done), unseen

    def line(self):
        elapsed = time.perf_counter() - self.start
        done, total, _ = self._estimate()
        eta = elapsed / done * (total - done) if done else None
        filled = min(self.width, int(self.width * self.finished / max(1, self.rows)))
        bar = "#" * filled + "-" * (self.width - filled)
        approximate = "~" if done < total else ""
        text = f"batch [{bar}] rows {self.finished}/{self.rows}, slices {done}/{approximate}{total:.0f}, "
        text += f"{_clock(elapsed)} elapsed"
        return text + (f", ETA {_clock(eta)}" if eta is not None and self.finished < self.rows else "")

    def _draw(self, force=False):
        if self.tty:
            self.stream.write("\r" + self.line() + ("\n" if self.finished >= self.rows else ""))
        else:
            tenth = 10 * self.finished // max(1, self.rows)
            if not force or tenth == self._last_tenth:
                return
            self._last_tenth = tenth
            self.stream.write(self.line() + "\n")
        self.stream.flush()
